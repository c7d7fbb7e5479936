"""The geovq modules import each other without a cycle: each fact lives in one module, and the modules
that use it import that one, never the other way round. Read from the source with `ast`, imports
inside functions (lazy ones) included: a lazy import hides a cycle from Python, not from the design."""

import ast

from conftest import ROOT

PACKAGE = "geovq"


def modules():
    """{module name: path} of every module under geovq/ (a package's ``__init__.py`` is the package)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name, path, known):
    """The geovq modules module ``name`` (file ``path``) imports anywhere in its code."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package of `name`, up level - 1
                pkg = name.split(".") if is_package else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from geovq.x import y`: the submodule geovq.x.y when there is one, else geovq.x
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # geovq.x.attr: the longest module prefix
                target = target.rpartition(".")[0]
            if target.split(".")[0] == PACKAGE and target != name:
                out.add(target)
    return out


def find_cycle(graph):
    """One cycle of ``graph`` ({node: set of nodes}) as [a, b, ..., a], or None."""
    state = {}  # node -> 1 on the current path, 2 done
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_lazy_and_relative_imports_are_edges(tmp_path):
    known = {"geovq", "geovq.a", "geovq.b", "geovq.stages", "geovq.stages.s"}
    src = tmp_path / "s.py"
    src.write_text("import numpy\n\n\ndef f():\n    from ..a import x\n    import geovq.b.attr\n")
    assert imported("geovq.stages.s", src, known) == {"geovq.a", "geovq.b"}


def test_no_import_cycle_among_geovq_modules():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle among geovq modules: " + " -> ".join(cycle)

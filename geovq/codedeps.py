"""Each rule's code inputs: the geovq source files its job can run, read from the imports with `ast`.

Nothing is imported: rules/common.smk calls `code_inputs` while Snakemake builds the DAG. A job runs
workflow_scripts/run_stage.py, which hands the job to a warm server (geovq.stages.warm.delegate) or
runs it itself; either way geovq.stages.runner.run_rule looks the rule up in geovq.stages.registry and
calls ``runner.entry`` on the function the registry names for it; what that can run is the closure
below, over nodes (module, top-level name):

- (m, f) depends on m's top level (m, TOP), which runs when m is imported: the top level of every
  geovq module m imports at module level, the top-level names m's module-level statements use (not
  function bodies), and m's parent packages;
- (m, f) depends on every geovq import inside f's body and on every other top-level name of m that
  f's body references (recursively), a name m imports at module level included;
- ``from geovq.x import y`` (used): node (x, y) when y is a top-level def/class/assignment of x (or a
  name x imports), the whole module geovq.x.y when that is a module, else the whole module x;
  ``import geovq.x`` and ``geovq.x.attr``: the whole module x (all its names). Relative imports
  resolve the same way. A module-level import that f does not use costs f only the imported
  module's top level: its file is an input, the functions of it that f never calls are not.

The files of every module touched, parent packages' ``__init__.py`` included, are the rule's code
inputs: editing one reruns the rule's jobs and what follows; editing any other file reruns none.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "geovq"
REGISTRY = "geovq.stages.registry"
# what every job runs around its stage: the warm-server hand-over, then the runner
RUNNER = (("geovq.stages.warm", "delegate"), ("geovq.stages.runner", "run_rule"))
TOP = None  # the name of a module's top level in a node (module, TOP)

_parsed = {}  # path -> (mtime_ns, size, _Module)


class _Module:
    """One parsed module: its top-level names and what its top level imports and references."""

    def __init__(self, name, path, is_package):
        self.name, self.path, self.is_package = name, path, is_package
        self.tree = ast.parse(path.read_text(), str(path))
        self.defs = {}  # top-level name -> the statements that bind it (def, class, assignment)
        self.imports = {}  # top-level name -> the module-level import statements that bind it
        self.import_time = []  # nodes of the top level that run on import (not function bodies)
        for stmt in _flatten(self.tree.body):
            for name in _bound_names(stmt):
                self.defs.setdefault(name, []).append(stmt)
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                for alias in stmt.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    one = (
                        ast.Import(names=[alias])
                        if isinstance(stmt, ast.Import)
                        else ast.ImportFrom(module=stmt.module, names=[alias], level=stmt.level)
                    )
                    self.imports.setdefault(bound, []).append(one)
        for stmt in self.tree.body:
            self.import_time.extend(_import_time_parts(stmt))


def _flatten(stmts):
    """Top-level statements, looking into if/try/with/for blocks (whose bodies run on import)."""
    for stmt in stmts:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield stmt
            continue
        yield stmt
        for field in ("body", "orelse", "finalbody"):
            yield from _flatten(getattr(stmt, field, []) or [])
        for handler in getattr(stmt, "handlers", []) or []:
            yield from _flatten(handler.body)


def _bound_names(stmt):
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    targets = []
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _import_time_parts(stmt):
    """The parts of a top-level statement that run when the module is imported."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = stmt.args
        return [*stmt.decorator_list, *a.defaults, *(d for d in a.kw_defaults if d is not None)]
    if isinstance(stmt, ast.ClassDef):  # the class body runs, its methods' bodies do not
        parts = [*stmt.decorator_list, *stmt.bases, *stmt.keywords]
        for s in stmt.body:
            parts.extend(_import_time_parts(s))
        return parts
    parts = []
    for _, value in ast.iter_fields(stmt):
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, ast.stmt):
                parts.extend(_import_time_parts(item))
            elif isinstance(item, ast.ExceptHandler):
                parts.extend([item.type] if item.type is not None else [])
                for s in item.body:
                    parts.extend(_import_time_parts(s))
            elif isinstance(item, ast.AST):
                parts.append(item)
    return parts if not isinstance(stmt, (ast.Import, ast.ImportFrom)) else [stmt]


class Source:
    """The geovq package under ``root`` (the repository), parsed on demand."""

    def __init__(self, root):
        self.root = Path(root)

    def path(self, module):
        """The file of a geovq module, or None when there is none."""
        parts = module.split(".")
        if parts[0] != PACKAGE:
            return None
        base = self.root.joinpath(*parts)
        for p in (base.with_suffix(".py"), base / "__init__.py"):
            if p.is_file():
                return p
        return None

    def module(self, name):
        path = self.path(name)
        if path is None:
            return None
        st = path.stat()
        hit = _parsed.get(path)
        if hit is None or hit[:2] != (st.st_mtime_ns, st.st_size):
            hit = (st.st_mtime_ns, st.st_size, _Module(name, path, path.name == "__init__.py"))
            _parsed[path] = hit
        return hit[2]

    # ------------------------------------------------------------ the closure
    def whole(self, module):
        """Every node of a module: its top level and all its top-level names."""
        m = self.module(module)
        return [] if m is None else [(module, TOP)] + [(module, n) for n in {**m.defs, **m.imports}]

    def _imported(self, m, node, used=True):
        """Nodes an import statement of module m brings in: when its names are ``used``, what they
        can run; else (a module-level import, run on import) the top level of what it imports."""
        if isinstance(node, ast.Import):
            if not used:
                return [(alias.name, TOP) for alias in node.names if self.module(alias.name)]
            return [n for alias in node.names for n in self.whole(alias.name)]
        if node.level:  # relative: from the package of m, up level - 1
            pkg = m.name.split(".") if m.is_package else m.name.split(".")[:-1]
            pkg = pkg[: len(pkg) - (node.level - 1)]
            base = ".".join(pkg + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        target = self.module(base)
        if target is None:
            return []
        nodes = [(base, TOP)]
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if self.path(sub) is not None:
                nodes += self.whole(sub) if used else [(sub, TOP)]
            elif not used:
                continue
            elif alias.name != "*" and (alias.name in target.defs or alias.name in target.imports):
                nodes.append((base, alias.name))
            else:
                nodes += self.whole(base)
        return nodes

    def _references(self, m, parts, skip=None, used=True):
        """Nodes the code in ``parts`` (AST nodes of module m) imports or references."""
        nodes = []
        for part in parts:
            for node in ast.walk(part):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    nodes += self._imported(m, node, used)
                elif isinstance(node, ast.Name) and node.id != skip and (node.id in m.defs or node.id in m.imports):
                    nodes.append((m.name, node.id))
                elif isinstance(node, ast.Attribute):  # geovq.x.y...: the longest module prefix
                    chain = []
                    while isinstance(node, ast.Attribute):
                        chain.append(node.attr)
                        node = node.value
                    if isinstance(node, ast.Name) and node.id == PACKAGE:
                        dotted = [PACKAGE, *reversed(chain)]
                        for i in range(len(dotted), 1, -1):
                            if self.path(".".join(dotted[:i])) is not None:
                                nodes += self.whole(".".join(dotted[:i]))
                                break
        return nodes

    def deps(self, node):
        module, name = node
        m = self.module(module)
        if m is None:
            return []
        if name is TOP:
            parent = module.rpartition(".")[0]
            return ([(parent, TOP)] if parent else []) + self._references(m, m.import_time, used=False)
        nodes = [(module, TOP)] + self._references(m, m.defs.get(name, []), skip=name)
        return nodes + [n for imp in m.imports.get(name, []) for n in self._imported(m, imp)]

    def closure(self, roots):
        """Every node reachable from ``roots`` ((module, name) pairs)."""
        seen, todo = set(), list(roots)
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.deps(node))
        return seen

    def files(self, roots):
        """Sorted repository-relative paths of the modules the closure of ``roots`` touches."""
        paths = {self.path(m) for m, _ in self.closure(roots)} - {None}
        return sorted(p.relative_to(self.root).as_posix() for p in paths)

    # ------------------------------------------------------------ the registry
    def registry(self):
        """registry.STAGES read as a literal: {rule: "module:function"}."""
        m = self.module(REGISTRY)
        for stmt in m.tree.body:
            if isinstance(stmt, ast.Assign) and [getattr(t, "id", None) for t in stmt.targets] == ["STAGES"]:
                return ast.literal_eval(stmt.value)
        raise ValueError(f"{m.path}: no STAGES = {{...}} literal")

    def stage(self, rule):
        """(module, function) of a rule's stage, checked to be a top-level function of that module."""
        stages = self.registry()
        if rule not in stages:
            raise ValueError(f"rule {rule!r} has no stage in {self.path(REGISTRY)}")
        module, _, fn = stages[rule].partition(":")
        m = self.module(module)
        if m is None or not any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) for s in m.defs.get(fn, [])):
            raise ValueError(f"rule {rule!r}: registry entry {stages[rule]!r} names no function of a geovq module")
        return module, fn

    def roots(self, rule):
        """Where a rule's job starts: its stage, the runner's entry and the registry."""
        return [self.stage(rule), *RUNNER, (REGISTRY, TOP)]


def code_inputs(rule, root):
    """Sorted repository-relative paths of the geovq files a job of ``rule`` can run (see the module doc)."""
    src = Source(root)
    return src.files(src.roots(rule))

"""Each rule's code inputs (geovq.codedeps), read from the imports: on a small package written here,
function by function, and on the repository's own stages and rules."""

import ast
import re
import textwrap

import pytest

from conftest import ROOT
from geovq.codedeps import Source, code_inputs

# What every job of the synthetic package loads around its stage: the packages, the registry, the
# warm-server hand-over, the runner and the runner's module-level import.
BASE = {
    "geovq/__init__.py",
    "geovq/stages/__init__.py",
    "geovq/stages/registry.py",
    "geovq/stages/runner.py",
    "geovq/stages/warm.py",
    "geovq/io.py",
}

PACKAGE = {
    "geovq/__init__.py": "",
    "geovq/io.py": "def save():\n    pass\n",
    "geovq/stages/__init__.py": "",
    "geovq/stages/runner.py": """
        from geovq.io import save


        def run_rule(smk):
            entry(smk, None)


        def entry(smk, stage):
            stage()
        """,
    "geovq/stages/warm.py": """
        def delegate(smk, root):
            return None
        """,
    "geovq/stages/registry.py": """
        STAGES = {
            "plain": "geovq.stages.s:plain",
            "imports": "geovq.stages.s:imports",
            "caller": "geovq.stages.s:caller",
            "helper": "geovq.stages.s:uses_helper",
            "attribute": "geovq.stages.s:attribute",
            "relative": "geovq.stages.s:relative",
            "other": "geovq.stages.t:other",
        }
        """,
    "geovq/stages/s.py": """
        from geovq.top import helper

        LIMIT = 3


        def plain(inp, out, params, log):
            return LIMIT


        def imports(inp, out, params, log):
            from geovq.heavy import f

            return f()


        def caller(inp, out, params, log):
            return _sibling()


        def _sibling():
            import geovq.lonely

            return geovq.lonely.x


        def uses_helper(inp, out, params, log):
            return helper()


        def attribute(inp, out, params, log):
            import geovq.pkg

            return geovq.pkg.attrmod.y


        def relative(inp, out, params, log):
            from ..relmod import r

            return r
        """,
    "geovq/stages/t.py": """
        def other(inp, out, params, log):
            from geovq.lonely import x

            return x
        """,
    "geovq/top.py": """
        from geovq.topdep import t


        def helper():
            from geovq.helperdep import h

            return h
        """,
    "geovq/topdep.py": "t = 1\n",
    "geovq/helperdep.py": "h = 1\n",
    "geovq/heavy.py": """
        def f():
            from geovq.deep import g

            return g()


        def unrelated():
            from geovq.unused import u

            return u
        """,
    "geovq/deep.py": "def g():\n    return 1\n",
    "geovq/unused.py": "u = 1\n",
    "geovq/lonely.py": "x = 1\n",
    "geovq/pkg/__init__.py": "",
    "geovq/pkg/attrmod.py": "y = 1\n",
    "geovq/relmod.py": "r = 1\n",
}


@pytest.fixture
def package(tmp_path):
    for rel, text in PACKAGE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path


def inputs(root, rule):
    return set(code_inputs(rule, root))


def test_a_function_that_imports_nothing_gets_only_module_level_imports(package):
    # s.py's module-level `from geovq.top import helper` runs top.py's top level (its own module-level
    # import included) but not helper's body; the other functions' imports are not plain's
    assert inputs(package, "plain") == BASE | {"geovq/stages/s.py", "geovq/top.py", "geovq/topdep.py"}


def test_imports_inside_the_function_and_their_closure(package):
    plain = inputs(package, "plain")
    assert inputs(package, "imports") == plain | {"geovq/heavy.py", "geovq/deep.py"}  # not heavy.unrelated's


def test_a_referenced_sibling_function_brings_its_imports(package):
    assert inputs(package, "caller") == inputs(package, "plain") | {"geovq/lonely.py"}


def test_a_used_module_level_import_brings_the_body_of_what_it_imports(package):
    assert inputs(package, "helper") == inputs(package, "plain") | {"geovq/helperdep.py"}


def test_attribute_chains_and_relative_imports(package):
    plain = inputs(package, "plain")
    assert inputs(package, "attribute") == plain | {"geovq/pkg/__init__.py", "geovq/pkg/attrmod.py"}
    assert inputs(package, "relative") == plain | {"geovq/relmod.py"}


def test_another_module_of_the_same_package_is_not_an_input(package):
    assert inputs(package, "other") == BASE | {"geovq/stages/t.py", "geovq/lonely.py"}


def test_edits_are_read_again(package):
    t = package / "geovq" / "stages" / "t.py"
    t.write_text(t.read_text().replace("from geovq.lonely import x", "from geovq.deep import g as x"))
    assert inputs(package, "other") == BASE | {"geovq/stages/t.py", "geovq/deep.py"}


def test_unknown_rule_and_missing_function(package):
    with pytest.raises(ValueError, match="rule 'nope' has no stage in"):
        code_inputs("nope", package)
    reg = package / "geovq" / "stages" / "registry.py"
    reg.write_text(reg.read_text().replace("geovq.stages.t:other", "geovq.stages.t:gone"))
    with pytest.raises(ValueError, match="'geovq.stages.t:gone' names no function"):
        code_inputs("other", package)


# ---------------------------------------------------------------- the repository
def test_riemannian_lengths_reads_the_decoder_rewrite_and_the_device():
    files = set(code_inputs("riemannian_lengths", ROOT))
    assert {
        "geovq/jvp.py",
        "geovq/device.py",
        "geovq/riemann.py",
        "geovq/train.py",
        "geovq/models.py",
        "geovq/stages/geodesic.py",
        "geovq/stages/runner.py",
        "geovq/artifacts.py",
    } <= files


INFRASTRUCTURE = {"__init__.py", "registry.py", "runner.py", "warm.py"}  # geovq/stages/ around the stages


def stage_modules(files):
    return {f for f in files if f.startswith("geovq/stages/")} - {f"geovq/stages/{m}" for m in INFRASTRUCTURE}


def test_a_rule_depends_on_its_own_stage_module_only():
    src = Source(ROOT)
    for rule, target in src.registry().items():
        module = target.partition(":")[0]
        assert stage_modules(code_inputs(rule, ROOT)) == {module.replace(".", "/") + ".py"}, rule
    evaluate = set(code_inputs("evaluate", ROOT))
    assert "geovq/stages/vae.py" not in evaluate and "geovq/device.py" in evaluate


def test_every_registry_entry_is_a_function():
    src = Source(ROOT)
    for rule, target in src.registry().items():
        module, _, fn = target.partition(":")
        path = src.path(module)
        assert path is not None, target
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == fn for n in tree.body), target


def included_rules():
    """{rule: the name its code_inputs(...) is called with} of every rule file the Snakefile includes."""
    rules = {}
    for inc in re.findall(r'^include: "(rules/\w+\.smk)"', (ROOT / "Snakefile").read_text(), re.M):
        text = (ROOT / inc).read_text()
        for block in re.split(r"^(?=rule )", text, flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            if "run_stage.py" in block:
                called = re.search(r'code=code_inputs\("(\w+)"\)', block)
                rules[name] = called.group(1) if called else None
    return rules


def test_every_rule_runs_its_registered_stage_with_its_code_inputs():
    rules = included_rules()
    assert len(rules) >= 17
    assert all(called == name for name, called in rules.items()), rules
    assert set(rules) <= set(Source(ROOT).registry())
    scripts = set(re.findall(r'script:\s*"([^"]+)"', "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))))
    assert scripts == {"../workflow_scripts/run_stage.py"}  # one entry script for every rule


def test_no_stage_imports_another_stages_private_helpers():
    for path in sorted((ROOT / "geovq").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("geovq.stages"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.relative_to(ROOT)} imports {private} from {node.module}"
                if path.parent.name == "stages" and path.name not in INFRASTRUCTURE:  # a stage imports the runner only
                    assert node.module == "geovq.stages.runner", f"{path.relative_to(ROOT)}: {node.module}"

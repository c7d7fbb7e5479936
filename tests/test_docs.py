"""The documents' generated parts, compared with a fresh generation so that they cannot go stale
unnoticed (`make docs` regenerates them): config/README.md's reference, docs/rulegraph.md.
"""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "workflow_scripts"))
import config_reference  # noqa: E402
import docblock  # noqa: E402
import rulegraph  # noqa: E402


# ---------------------------------------------------------------- config/README.md's reference


def test_config_reference_is_current():
    path = ROOT / "config" / "README.md"
    committed = docblock.current(path.read_text(), config_reference.BEGIN, config_reference.END, path)
    fresh = config_reference.render(config_reference.load_schema(config_reference.SCHEMA_PATH))
    assert committed == fresh, "config/README.md's reference is stale: run `make docs`"


def test_config_readme_describes_every_section():
    """Every top-level key of the schema is named in the hand-written part, each section in a
    paragraph of its own ("**`section`**: ...")."""
    schema = config_reference.load_schema(config_reference.SCHEMA_PATH)
    text = (ROOT / "config" / "README.md").read_text()
    written = text[: text.index(config_reference.BEGIN)]
    missing = []
    for key, node in schema["properties"].items():
        node = config_reference._resolve(node, schema)
        section = config_reference.children(node, schema) is not None
        if (f"**`{key}`**" if section else f"`{key}`") not in written:
            missing.append(key)
    assert not missing, f"config/README.md has no overview of {missing}: add it under 'The sections'"


def test_config_reference_lists_every_key():
    rows = [r[0] for _, _, rs in config_reference.sections(config_reference.load_schema()) for r in rs]
    for key in ("datasets", "codebook.fit_cells", "vae.spatial.beta", "prior.sample.n", "vqvae.vanilla.decay"):
        assert key in rows
    assert "overrides.<name>.vae" in rows


def test_config_reference_rejects_a_stray_key():
    """An unquoted comma in a YAML flow mapping makes a key validation ignores: the docs refuse it."""
    import yaml

    schema = yaml.safe_load("properties: {n: {type: integer, default: 1, description: drawn, decoded}}")
    with pytest.raises(docblock.DocError, match="'n'.*decoded"):
        config_reference.render(schema)


# ---------------------------------------------------------------- docs/rulegraph.md


@pytest.mark.slow
def test_rulegraph_is_current():
    """docs/rulegraph.md against a fresh `snakemake --rulegraph` (a few seconds; needs no data)."""
    committed = (ROOT / "docs" / "rulegraph.md").read_text()
    assert committed == rulegraph.render(), "docs/rulegraph.md is stale: run `make docs`"


def test_rulegraph_is_canonical():
    a = "---\ntitle: DAG\n---\nflowchart TB\n\tid0[all]\n\tid1[b_rule]\n\tid2[a_rule]\n\tstyle id0 fill:#D95757\n"
    edges = ["\tid2 --> id1\n", "\tid1 --> id0\n", "\tid2 --> id0\n"]
    one = rulegraph.canonical(a + "".join(edges))
    assert one == rulegraph.canonical(a.replace("id1", "id9") + "".join(e.replace("id1", "id9") for e in edges[::-1]))
    assert one.splitlines() == [
        "flowchart TB",
        "    r_a_rule[a_rule]",
        "    r_all[all]",
        "    r_b_rule[b_rule]",
        "    r_a_rule --> r_all",
        "    r_a_rule --> r_b_rule",
        "    r_b_rule --> r_all",
    ]

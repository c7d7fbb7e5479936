"""The documents: config/README.md's generated reference, docs/rulegraph.md, README.md's generated
findings block, and links that lead somewhere.

What is generated from the source (the reference, the rule graph) is compared with a fresh
generation, so it cannot go stale unnoticed: `make docs` regenerates it. The findings block's
generator is tested on answer.md files made here.
"""

import re
import sys

import numpy as np
import pytest

from conftest import ROOT
from geovq import study

sys.path.insert(0, str(ROOT / "workflow_scripts"))
import config_reference  # noqa: E402
import docblock  # noqa: E402
import readme_summary  # noqa: E402
import rulegraph  # noqa: E402

M = study.MINUS


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


# ---------------------------------------------------------------- README's findings block

SIDES = [
    ("riemannian", "geodesic"),
    ("riemannian", "nearest"),
    ("riemannian", "metric"),
    ("kmeans", "nearest"),
    ("kmeans", "metric"),
    ("graph", "geodesic"),
    ("vqvae", "nearest"),
]


def per_image(seeds=(0, 1, 2), n=60):
    """Synthetic paired per-image results of two dataset x variant runs; riemannian/geodesic lowest."""
    rng = np.random.default_rng(3)
    shift = {"riemannian": -0.06, "kmeans": 0.0, "graph": 0.01, "vqvae": -0.1}
    index = rng.permutation(500)[:n]
    out = {}
    for variant in ("spatial", "vanilla"):
        base = rng.uniform(0.01, 0.03, n)
        for seed in seeds:
            seed_eff = rng.normal(0, 0.0005)
            for q, assign in SIDES:
                bonus = {"geodesic": -0.03, "metric": -0.02, "nearest": 0.0}[assign]
                mse = base * (1 + shift[q] + bonus) + seed_eff + rng.normal(0, 0.0005, n)
                out[("fashionmnist", variant, q, assign, seed)] = {
                    "image_index": index.copy(),
                    "mse_quant_real": mse,
                    "mse_quant_cont": np.full(n, np.nan) if q == "vqvae" else 0.6 * mse,
                }
    return out


SPECS = [{"a": a, "b": b, "factor": f} for a, b, f in [
    ("riemannian/geodesic", "kmeans/nearest", "the whole method vs the Euclidean baseline (several factors)"),
    ("riemannian/geodesic", "riemannian/nearest", "test assignment: geodesic vs nearest code"),
    ("riemannian/metric", "riemannian/geodesic", ""),  # no factor: the bullet has no " (...)"
    ("riemannian/geodesic", "graph/geodesic", "edge lengths: decoder-induced vs Euclidean"),  # not a key contrast
    ("kmeans/metric", "kmeans/nearest", "test assignment: metric vs nearest code"),
    ("riemannian/geodesic", "vqvae/nearest", "post-hoc vs end-to-end (several factors)"),
    ("fisher/geodesic", "riemannian/geodesic", "pull-back metric"),  # no fisher results: "Not computed"
]]  # fmt: skip

NUMBER = re.compile(rf"[{M}-]?\d+(?:\.\d+)?(?:e[{M}+-]?\d+)?")


def answer_bullets(answer_md):
    """{(section, contrast): bullet} of an answer.md, read independently of the generator."""
    out, section = {}, None
    for line in answer_md.splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("- ") and section != "Not computed":
            out[(section, re.split(r" \(|: ", line[2:], maxsplit=1)[0])] = line[2:]
    return out


def block_bullets(readme_text):
    """[(section, bullet)] of the generated block, in order."""
    body = docblock.current(readme_text, readme_summary.BEGIN, readme_summary.END, "README")
    out, section = [], None
    for line in body.splitlines():
        if m := re.fullmatch(r"\*\*(.+)\*\*", line):
            section = m[1]
        elif line.startswith("- "):
            out.append((section, line[2:]))
    return out


def make_readme(tmp_path, text="# t\n\nbefore\n\n<!-- summary:begin -->\nold\n<!-- summary:end -->\n\nafter\n"):
    path = tmp_path / "README.md"
    path.write_text(text)
    return path


def generate(tmp_path, answer_md, figure=False):
    answer = tmp_path / "results" / "tables" / "answer.md"
    answer.parent.mkdir(parents=True)
    answer.write_text(answer_md)
    png = answer.with_name("contrasts.png")
    if figure:
        png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    readme = make_readme(tmp_path)
    fig_out = tmp_path / "docs" / "figures" / "contrasts.png"
    readme_summary.update(answer, readme, png, fig_out)
    return readme.read_text(), fig_out


def test_summary_copies_the_key_sentences_verbatim(tmp_path):
    answer_md = study.answer_markdown(study.contrasts(per_image(), SPECS))
    text, fig_out = generate(tmp_path, answer_md, figure=True)
    assert text.startswith("# t\n\nbefore\n\n<!-- summary:begin -->\n") and text.endswith(
        "<!-- summary:end -->\n\nafter\n"
    )
    assert "\nold\n" not in text
    source = answer_bullets(answer_md)
    generated = block_bullets(text)
    keys_in_answer = {k for k in source if k[1] in readme_summary.KEY_CONTRASTS}
    assert len(keys_in_answer) == 10  # 5 key contrasts with results x 2 variants
    assert {(s, readme_summary.contrast_name(b)) for s, b in generated} == keys_in_answer
    for section, bullet in generated:
        full = source[(section, readme_summary.contrast_name(bullet))]
        assert full.startswith(bullet[:-1]), (bullet, full)  # copied: a prefix of answer.md's bullet
        assert "quant–real MSE" in bullet and "quant–cont" not in bullet
        for number in NUMBER.findall(bullet):
            assert number in full, (number, full)
    assert not any(readme_summary.contrast_name(b) == f"riemannian/geodesic {M} graph/geodesic" for _, b in generated)
    # in KEY_CONTRASTS order within a section
    order = [
        readme_summary.KEY_CONTRASTS.index(readme_summary.contrast_name(b))
        for s, b in generated
        if s == "fashionmnist, spatial"
    ]
    assert order == sorted(order)
    assert fig_out.read_bytes() == (tmp_path / "results" / "tables" / "contrasts.png").read_bytes()
    assert "](docs/figures/contrasts.png)" in text


def test_summary_reads_sentences_with_seed_agreement(tmp_path):
    """answer.md with per-seed agreement ("lower in 6 of 6 seeds; ..."): a clause may hold "; "."""
    a = f"riemannian/geodesic {M} kmeans/nearest"
    real = (
        f"quant–real MSE lower in 6 of 6 seeds; {M}1.23e-03 ({M}15.6 %), 95 % CI [{M}4.2e-03, {M}5.6e-04], "
        f"p = 0.03, 6 seeds × 5000 images — riemannian/geodesic is lower"
    )
    cont = f"quant–cont MSE lower in 5 of 6 seeds; {M}2.0e-04 ({M}4.4 %), 95 % CI [{M}3.0e-04, {M}1.0e-04], p = 0.01"
    answer_md = (
        "# Answer\n\nMethod paragraph; with a semicolon.\n\n## fashionmnist, spatial\n\n"
        f"- {a} (the whole method (several factors): codebook and assignment): {real}; {cont}.\n"
        f"- kmeans/metric {M} kmeans/nearest: {real.replace('riemannian/geodesic', 'kmeans/metric')}.\n"
        "\n## Not computed\n\n"
        f"- fashionmnist/spatial: riemannian/geodesic {M} vqvae/nearest not computed (no results for vqvae/nearest).\n"
    )
    text, _ = generate(tmp_path, answer_md)
    bullets = [b for _, b in block_bullets(text)]
    assert bullets == [
        f"{a} (the whole method (several factors): codebook and assignment): {real}.",
        f"kmeans/metric {M} kmeans/nearest: {real.replace('riemannian/geodesic', 'kmeans/metric')}.",
    ]
    assert "No figure: `" in text and "results/tables/contrasts.png" in text and "![" not in text


def test_summary_fails_naming_the_file(tmp_path, capsys):
    readme = make_readme(tmp_path)
    missing = tmp_path / "answer.md"
    with pytest.raises(SystemExit) as e:
        readme_summary.main(["--answer", str(missing), "--readme", str(readme)])
    msg = str(e.value)
    assert str(missing) in msg and "\n" not in msg, msg
    missing.write_text("# Answer\n")
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit) as e:
        readme_summary.main(["--answer", str(missing), "--readme", str(readme), "--figure", str(tmp_path / "none.png")])
    msg = str(e.value)
    assert str(readme) in msg and "summary:begin" in msg and "\n" not in msg, msg
    assert readme.read_text() == "# no markers\n"  # left as it was


# ---------------------------------------------------------------- README and links

README_MAX_LINES = 250


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    docblock.current(text, readme_summary.BEGIN, readme_summary.END, "README.md")  # the markers, once each


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path):
    out, fenced = set(), False
    for line in path.read_text().splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            out.add(slug(m[1]))
    return out


def links(path):
    """Relative link targets of a Markdown file outside code blocks and code spans."""
    fenced, out = False, []
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced and not line.startswith("    "):
            out += [t for t in LINK.findall(re.sub(r"`[^`]*`", "", line)) if not re.match(r"[a-z]+:", t)]
    return out


DOCUMENTS = ["README.md", "config/README.md", "benchmarks/README.md"] + sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")
)


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_relative_links_lead_somewhere(doc):
    path = ROOT / doc
    broken = []
    for target in links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, f"{doc}: links to missing files or headings: {broken}"


def test_slug_matches_github():
    assert slug("Cluster (SLURM) and GPU") == "cluster-slurm-and-gpu"
    assert slug("Geodesic quantization: benchmarks") == "geodesic-quantization-benchmarks"
    assert slug("The study: contrasts, intervals and the answer") == "the-study-contrasts-intervals-and-the-answer"

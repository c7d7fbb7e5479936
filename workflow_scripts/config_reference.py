"""Rewrite the key reference in config/README.md from config/schema.yaml (`make docs`).

The block between ``<!-- reference:begin -->`` and ``<!-- reference:end -->`` gets one table of
the top-level keys and one per section: every key by dotted name, its type, its default and the
schema's description. tests/test_docs.py fails when the committed block differs from what this
writes now.

    python workflow_scripts/config_reference.py [--schema S] [--readme R]
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's geovq, installed or not

from docblock import DocError, read, replace, write_atomic  # noqa: E402

# The docs follow $ref exactly as validation does.
from geovq.config import SCHEMA_PATH, _resolve, load_schema  # noqa: E402

BEGIN = "<!-- reference:begin -->"
END = "<!-- reference:end -->"
LONG_DEFAULT = 60  # characters; a longer default is summarised (the schema has it in full)

# A key of a property's schema outside these is a mistake that validation ignores: a typo, or an
# unquoted comma in a YAML flow mapping ({description: a, b} makes "b" a key).
KEYWORDS = set(
    "$ref $comment title description type default enum const pattern format minLength maxLength "
    "minimum maximum exclusiveMinimum exclusiveMaximum multipleOf items minItems maxItems uniqueItems "
    "contains properties additionalProperties patternProperties propertyNames required minProperties "
    "maxProperties anyOf oneOf allOf not examples deprecated".split()
)


def fmt(value) -> str:
    """A value as in a YAML config file (flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def _bounds(node, name: str) -> str:
    lo = next(((node[k], k == "minimum") for k in ("minimum", "exclusiveMinimum") if k in node), None)
    hi = next(((node[k], k == "maximum") for k in ("maximum", "exclusiveMaximum") if k in node), None)
    if lo and hi:
        return f"{name} in {'[' if lo[1] else '('}{fmt(lo[0])}, {fmt(hi[0])}{']' if hi[1] else ')'}"
    if lo:
        return f"{name} {'≥' if lo[1] else '>'} {fmt(lo[0])}"
    if hi:
        return f"{name} {'≤' if hi[1] else '<'} {fmt(hi[0])}"
    return name


def type_text(node, root) -> str:
    """``node``'s type in words: "integer ≥ 1 or null", "one of `a`, `b`", "list of ...", "mapping"."""
    node = _resolve(node, root)
    if "enum" in node:
        return "one of " + ", ".join(f"`{fmt(v)}`" for v in node["enum"])
    for alt in ("anyOf", "oneOf"):
        if alt in node:
            return " or ".join(type_text(sub, root) for sub in node[alt])
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    words = []
    for t in types:
        if t in ("integer", "number"):
            words.append(_bounds(node, t))
        elif t == "array":
            items = _resolve(node.get("items", {}), root)
            if "properties" in items:
                words.append("list of mappings")
            elif "enum" in items:
                words.append("list; each one of " + ", ".join(f"`{fmt(v)}`" for v in items["enum"]))
            else:
                words.append("list of " + type_text(items, root))
        elif t == "object":
            words.append("mapping")
        elif t == "string" and "pattern" in node:
            words.append(f"string matching `{node['pattern']}`")
        elif t != "null":
            words.append(t)
    text = " or ".join(words) or "any"
    return text + " or null" if "null" in types else text


def default_text(node) -> str:
    if "default" not in node:
        return "–"
    value = node["default"]
    text = fmt(value)
    if len(text) > LONG_DEFAULT and isinstance(value, list):
        return f"{len(value)} entries (config/schema.yaml)"
    return f"`{text}`"


def cell(text) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def prose(text) -> str:
    """A description for a table cell: as :func:`cell`, and "<variant>" shown, not taken for HTML."""
    return cell(text).replace("<", "&lt;")


def children(node, root) -> tuple[str, dict] | None:
    """``(prefix, {key: schema})`` of the keys below ``node``, or None for a leaf: its properties, or,
    for a mapping of named entries (``additionalProperties`` with properties), the entry's keys
    under ``<name>``."""
    if "properties" in node:
        return "", node["properties"]
    entry = node.get("additionalProperties")
    if isinstance(entry, dict):
        entry = _resolve(entry, root)
        if "properties" in entry:
            return "<name>.", entry["properties"]
    return None


def _rows(name: str, node, root, out: list, top: bool = False) -> None:
    """Rows ``(dotted key, type, default, description)`` of ``node`` and the keys below it; a
    section's own description heads its table instead (``top``)."""
    node = _resolve(node, root)
    odd = sorted(str(k) for k in node if k not in KEYWORDS)
    if odd:
        raise DocError(
            f"config/schema.yaml: key '{name}' has {odd}, no JSON Schema keyword (a typo, or an unquoted comma?)"
        )
    below = children(node, root)
    if below is None:
        out.append((name, type_text(node, root), default_text(node), node.get("description", "")))
        return
    if not top and (below[0] or node.get("description")):
        out.append((name, "mapping", default_text(node), node.get("description", "")))
    for key, sub in below[1].items():
        _rows(f"{name}.{below[0]}{key}", sub, root, out)


def sections(schema) -> list[tuple[str, str, list]]:
    """``[(section, description, rows), ...]``: the top-level keys without keys below them first (as
    section ""), then each section in the schema's order."""
    top, out = [], []
    for key, sub in schema["properties"].items():
        node = _resolve(sub, schema)
        if children(node, schema) is None:
            _rows(key, node, schema, top)
        else:
            rows = []
            _rows(key, node, schema, rows, top=True)
            out.append((key, node.get("description", ""), rows))
    return [("", "", top)] + out


def render(schema) -> str:
    """The block's body for ``schema``."""
    lines = [
        "",
        "<!-- generated from config/schema.yaml by `make docs` (workflow_scripts/config_reference.py): "
        "edit the schema, not this block -->",
    ]
    for name, description, rows in sections(schema):
        lines += ["", f"### `{name}`" if name else "### Top-level keys", ""]
        if description:
            lines += [prose(description), ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines += [f"| `{k}` | {cell(t)} | {cell(d)} | {prose(desc)} |" for k, t, d, desc in rows]
    return "\n".join(lines) + "\n\n"


def update(schema_path, readme) -> None:
    schema = load_schema(schema_path)
    text = read(readme)
    write_atomic(readme, replace(text, render(schema), BEGIN, END, readme))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--schema", default=SCHEMA_PATH)
    p.add_argument("--readme", default=ROOT / "config" / "README.md")
    a = p.parse_args(argv)
    try:
        update(a.schema, a.readme)
    except DocError as e:
        sys.exit(f"config_reference: {e}")


if __name__ == "__main__":
    main()

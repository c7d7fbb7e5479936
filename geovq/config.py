"""Config validation against config/schema.yaml (defaults filled in) and per-dataset merging."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import yaml

from geovq.io import GeovqError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


def _with_defaults(cls):
    """A validator class that also fills in ``default`` values (jsonschema FAQ recipe)."""
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def load_schema(path=SCHEMA_PATH):
    with open(path) as f:
        return yaml.safe_load(f)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _message(err: jsonschema.ValidationError) -> str:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"config key '{_key(path + extra[:1])}': unknown key; allowed here: {', '.join(allowed)}"
    if "propertyNames" in err.absolute_schema_path:  # a bad key: name it
        path = path + [err.instance]
    if err.validator == "pattern" and "description" in err.schema:  # say what the pattern means
        return f"config key '{_key(path)}': {err.instance!r} is not {err.schema['description']}"
    if err.validator == "type":
        return f"config key '{_key(path)}': expected {err.validator_value}, got {err.instance!r}"
    return f"config key '{_key(path)}': {err.message}"


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_PARSED_TYPES = {
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def _resolve(schema, root):
    """``schema`` with its local ``$ref`` (``#/a/b``) followed; sibling keys override the target's."""
    while isinstance(schema, dict) and "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema if isinstance(schema, dict) else {}


def _parse_scalar(text: str, types):
    """``text`` parsed as YAML if that gives a value of one of ``types`` (else ``text`` itself)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and "number" in types and _NUMBER.fullmatch(text.strip()):
        value = float(text)  # YAML 1.1 reads 1e-3 (no dot) as a string; a number is meant here
    if isinstance(value, bool) and "boolean" not in types:
        return text  # `yes` for an integer key stays a (rejected) string, not True == 1
    ok = any(isinstance(value, _PARSED_TYPES[t]) for t in types if t in _PARSED_TYPES)
    return value if ok else text


def coerce(value, schema, root=None):
    """``value`` with strings parsed where ``schema`` expects another type, recursively.

    ``snakemake --config`` hands values over as strings (``download=false`` -> 'false', and every
    value inside a list or mapping: ``seeds=[0,1]`` -> ['0', '1'], ``codebook={"K": 8}`` ->
    {'K': '8'}). A string is parsed as YAML (numbers also in 1e-3 form) where the schema does not
    accept a string but does accept integers, numbers, booleans, lists, mappings or null, so any
    value a config file may hold is accepted from the command line too. Values that do not parse
    to an accepted type are left as they are, for validation to reject by key.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(value, str):
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if types and "string" not in types:
            value = _parse_scalar(value, types)
        elif not types and "enum" in schema and value not in schema["enum"]:
            parsed = _parse_scalar(value, list(_PARSED_TYPES))
            value = parsed if any(parsed == e and type(parsed) is type(e) for e in schema["enum"]) else value
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce(v, items, root) for v in value]
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", {})
        extra = extra if isinstance(extra, dict) else {}
        return {k: coerce(v, props[k] if k in props else extra, root) for k, v in value.items()}
    return value


def _coerce_config(config: dict, schema) -> None:
    """Coerce ``config`` in place; ``overrides.<dataset>`` sections as the top-level sections they merge over."""
    coerced = coerce(config, schema)
    overrides = coerced.get("overrides")
    if isinstance(overrides, dict):
        for dataset, over in overrides.items():
            if isinstance(over, dict):
                overrides[dataset] = coerce(over, schema)
    config.clear()
    config.update(coerced)


def validate(config: dict, schema=None) -> dict:
    """Validate ``config`` in place (defaults filled in); raise GeovqError naming the first bad key.

    Strings where the schema expects another type are parsed first (see ``coerce``): values from
    ``snakemake --config`` arrive as strings."""
    schema = load_schema() if schema is None else schema
    _coerce_config(config, schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise GeovqError(_message(errors[0]))
    _check_datasets(config)
    for dataset in config.get("overrides", {}):
        merged = dataset_config(config, dataset)
        errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path))
        if errors:
            raise GeovqError(_message(errors[0]).replace("config key '", f"config key 'overrides.{dataset}.", 1))
    sorted_keys = canonical(config)
    config.clear()  # in place: Snakemake's global config object
    config.update(sorted_keys)
    return config


def _check_datasets(config: dict) -> None:
    """Image dataset names apart from the built-in ones, one held-out split each (test_fraction filled
    in where neither is given); every name in datasets and overrides built in or declared."""
    from geovq.data import DATASETS
    from geovq.images import DEFAULT_TEST_FRACTION

    declared = config["image_datasets"]
    for name, spec in declared.items():
        if name in DATASETS:
            raise GeovqError(
                f"config key 'image_datasets.{name}': {name!r} is a built-in dataset; give yours another name"
            )
        if spec["test_path"] is not None and spec["test_fraction"] is not None:
            raise GeovqError(
                f"config key 'image_datasets.{name}.test_fraction': give test_path or test_fraction, not both"
            )
        if spec["test_path"] is None and spec["test_fraction"] is None:
            spec["test_fraction"] = DEFAULT_TEST_FRACTION
    known = f"expected a built-in dataset ({', '.join(DATASETS)}) or a name declared under image_datasets"
    if declared:
        known += f" ({', '.join(declared)})"
    for i, name in enumerate(config["datasets"]):
        if name not in DATASETS and name not in declared:
            raise GeovqError(f"config key 'datasets.{i}': unknown dataset {name!r}; {known}")
    for name in config["overrides"]:
        if name not in DATASETS and name not in declared:
            raise GeovqError(f"config key 'overrides.{name}': unknown dataset {name!r}; {known}")


def canonical(value):
    """``value`` with every mapping's keys sorted, recursively.

    Jobs receive config sections as ``params``, and Snakemake compares params by their repr: the
    order in which a config file happens to list keys must not make a job look changed."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def dataset_config(config: dict, dataset: str) -> dict:
    """The config as seen by ``dataset``'s jobs: ``overrides.<dataset>`` merged over the sections."""
    over = config.get("overrides", {}).get(dataset, {})
    return canonical(deep_merge({k: v for k, v in config.items() if k != "overrides"}, over))


def load(path) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise GeovqError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise GeovqError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise GeovqError(f"{path}: expected a mapping of config keys")
    return validate(config)

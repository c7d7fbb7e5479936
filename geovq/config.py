"""Config validation against config/schema.yaml (defaults filled in) and per-dataset merging."""

from __future__ import annotations

import copy
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
    if err.validator == "propertyNames":
        return f"config key '{_key(path + [err.instance])}': {err.message}"
    if err.validator == "type":
        return f"config key '{_key(path)}': expected {err.validator_value}, got {err.instance!r}"
    return f"config key '{_key(path)}': {err.message}"


def validate(config: dict, schema=None) -> dict:
    """Validate ``config`` in place (defaults filled in); raise GeovqError naming the first bad key."""
    schema = load_schema() if schema is None else schema
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise GeovqError(_message(errors[0]))
    for dataset in config.get("overrides", {}):
        merged = dataset_config(config, dataset)
        errors = sorted(validator.iter_errors(merged), key=lambda e: list(e.absolute_path))
        if errors:
            raise GeovqError(_message(errors[0]).replace("config key '", f"config key 'overrides.{dataset}.", 1))
    sorted_keys = canonical(config)
    config.clear()  # in place: Snakemake's global config object
    config.update(sorted_keys)
    return config


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

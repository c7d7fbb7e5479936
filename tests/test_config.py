"""Config validation: defaults filled in, unknown keys and wrong types rejected by name."""

from pathlib import Path

import pytest
import yaml

from geovq import config
from geovq.io import GeovqError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = config.load(ROOT / "config" / name)
    assert cfg["codebook"]["K"] >= 2 and cfg["vae"]["spatial"]["grid"] >= 1


def test_defaults_filled():
    cfg = config.validate({})
    assert cfg["vae"]["spatial"]["latent_channels"] == 8 and cfg["device"] == "auto"


@pytest.mark.parametrize("bad,key", [
    ({"vae": {"spatial": {"epochs": "ten"}}}, "vae.spatial.epochs"),
    ({"vae": {"spatial": {"epoch": 3}}}, "vae.spatial.epoch"),
    ({"codebook": {"K": 0}}, "codebook.K"),
    ({"colour": "blue"}, "colour"),
    ({"datasets": ["imagenet"]}, "datasets.0"),
    ({"overrides": {"mnist": {"vae": {"vanilla": {"hiden": 3}}}}}, "overrides.mnist.vae.vanilla.hiden"),
    ({"device": "tpu"}, "device"),
])
def test_bad_config_names_key(bad, key):
    with pytest.raises(GeovqError) as e:
        config.validate(bad)
    assert f"'{key}'" in str(e.value) and "\n" not in str(e.value)


def test_overrides_merge_per_dataset():
    cfg = config.validate({"datasets": ["mnist", "cifar10"], "overrides": {"cifar10": {"vae": {"spatial": {"epochs": 7}}}}})
    assert config.dataset_config(cfg, "cifar10")["vae"]["spatial"]["epochs"] == 7
    assert config.dataset_config(cfg, "mnist")["vae"]["spatial"]["epochs"] == 10
    assert config.dataset_config(cfg, "cifar10")["vae"]["spatial"]["grid"] == 4


def test_load_reports_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("vae: [unclosed")
    with pytest.raises(GeovqError, match="c.yaml"):
        config.load(p)
    p.write_text(yaml.safe_dump({"seeds": [1, 1]}))
    with pytest.raises(GeovqError, match="'seeds'"):
        config.load(p)


def test_key_order_does_not_change_what_jobs_see():
    """Jobs get config sections as params, compared by repr: key order must not matter."""
    cfg = {"datasets": ["synthetic"], "codebook": {"K": 8, "train_images": 100},
           "overrides": {"synthetic": {"vae": {"spatial": {"epochs": 2, "channels": [4, 8]}}}}}
    flipped = {"overrides": {"synthetic": {"vae": {"spatial": {"channels": [4, 8], "epochs": 2}}}},
               "codebook": {"train_images": 100, "K": 8}, "datasets": ["synthetic"]}
    a, b = config.validate(cfg), config.validate(flipped)
    assert repr(a) == repr(b)
    for section in ("vae", "codebook", "graph", "medoids"):
        assert repr(config.dataset_config(a, "synthetic")[section]) == repr(config.dataset_config(b, "synthetic")[section])

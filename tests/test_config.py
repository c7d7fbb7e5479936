"""Config validation: defaults filled in, unknown keys and wrong types rejected by name."""

from pathlib import Path

import pytest
import yaml

from geovq import config
from geovq.io import GeovqError

ROOT = Path(__file__).resolve().parent.parent


SHIPPED = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")


def test_every_config_is_shipped_and_checked():
    assert {"config.yaml", "test.yaml", "cifar10.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_are_valid(name):
    cfg = config.load(ROOT / "config" / name)
    assert cfg["codebook"]["K"] >= 2 and cfg["vae"]["spatial"]["grid"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_plan_jobs(tmp_path, name):
    """Every config/*.yaml dry-runs into a plan in an empty directory (no data needed to plan)."""
    from conftest import planned_jobs

    jobs = planned_jobs(tmp_path, ROOT / "config" / name)
    cfg = config.load(ROOT / "config" / name)
    assert jobs["prepare_data"] == len(cfg["datasets"]) and jobs["all"] == 1
    assert jobs["train_vae"] == len(cfg["datasets"]) * len(cfg["variants"]) * len(cfg["seeds"])


def test_defaults_filled():
    cfg = config.validate({})
    assert cfg["vae"]["spatial"]["latent_channels"] == 8 and cfg["device"] == "auto"
    assert cfg["graph"]["metric_precision"] == "float32"


@pytest.mark.parametrize(
    "bad,key",
    [
        ({"vae": {"spatial": {"epochs": "ten"}}}, "vae.spatial.epochs"),
        ({"vae": {"spatial": {"epoch": 3}}}, "vae.spatial.epoch"),
        ({"codebook": {"K": 0}}, "codebook.K"),
        ({"colour": "blue"}, "colour"),
        ({"datasets": ["imagenet"]}, "datasets.0"),
        ({"overrides": {"mnist": {"vae": {"vanilla": {"hiden": 3}}}}}, "overrides.mnist.vae.vanilla.hiden"),
        ({"device": "tpu"}, "device"),
        ({"graph": {"metric_precision": "float16"}}, "graph.metric_precision"),
        ({"datasets": ["mine"]}, "datasets.0"),
        ({"datasets": ["my-images"]}, "datasets.0"),
        ({"image_datasets": {"mnist": {"kind": "folder", "path": "x", "channels": 1}}}, "image_datasets.mnist"),
        ({"image_datasets": {"my images": {"kind": "folder", "path": "x", "channels": 1}}}, "image_datasets.my images"),
        ({"image_datasets": {"mine": {"kind": "zip", "path": "x", "channels": 1}}}, "image_datasets.mine.kind"),
        ({"image_datasets": {"mine": {"kind": "npz", "channels": 1}}}, "image_datasets.mine"),
        ({"image_datasets": {"mine": {"kind": "npz", "path": "x", "channels": 2}}}, "image_datasets.mine.channels"),
        (
            {"image_datasets": {"mine": {"kind": "npz", "path": "x", "channels": 1, "size": 4}}},
            "image_datasets.mine.size",
        ),
        (
            {"image_datasets": {"mine": {"kind": "npz", "path": "x", "channels": 1, "test_fraction": 1}}},
            "image_datasets.mine.test_fraction",
        ),
        (
            {
                "image_datasets": {
                    "mine": {"kind": "npz", "path": "x", "channels": 1, "test_path": "y", "test_fraction": 0.1}
                }
            },
            "image_datasets.mine.test_fraction",
        ),
        (
            {"image_datasets": {"mine": {"kind": "npz", "path": "x", "channels": 1, "colour": 1}}},
            "image_datasets.mine.colour",
        ),
        ({"overrides": {"mine": {"vae": {}}}}, "overrides.mine"),
    ],
)
def test_bad_config_names_key(bad, key):
    with pytest.raises(GeovqError) as e:
        config.validate(bad)
    assert f"'{key}'" in str(e.value) and "\n" not in str(e.value)


def test_image_datasets_are_named_like_built_in_ones():
    """A declared name is a dataset: listed in datasets and overrides, its split defaulted, its name a wildcard value."""
    cfg = config.validate(
        {
            "datasets": ["fashionmnist", "my_photos2"],
            "image_datasets": {"my_photos2": {"kind": "folder", "path": "photos", "channels": 3, "size": 32}},
            "overrides": {"my_photos2": {"vae": {"spatial": {"grid": 8}}}},
        }
    )
    assert cfg["image_datasets"]["my_photos2"] == {
        "kind": "folder",
        "path": "photos",
        "channels": 3,
        "size": 32,
        "test_path": None,
        "test_fraction": 0.2,
        "split_seed": 0,
    }
    assert config.dataset_config(cfg, "my_photos2")["vae"]["spatial"]["grid"] == 8
    with_test = {"kind": "npz", "path": "a.npz", "test_path": "b.npz", "channels": 1}
    cfg = config.validate({"datasets": ["arrays"], "image_datasets": {"arrays": with_test}})
    assert cfg["image_datasets"]["arrays"]["test_fraction"] is None  # the test file is the test split


def test_readme_image_datasets_example_is_valid():
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```")[0] for b in text.split("```yaml\n")[1:]]
    (example,) = [yaml.safe_load(b) for b in blocks if "image_datasets:" in b]
    cfg = config.validate(example)
    assert cfg["datasets"] == list(cfg["image_datasets"]) and cfg["image_datasets"][cfg["datasets"][0]]["size"]


def test_image_datasets_from_the_command_line():
    cfg = config.validate(
        cli('image_datasets={"mine": {"kind": "folder", "path": "p", "channels": 1, "size": 16}}', "datasets=[mine]")
    )
    assert cfg["image_datasets"]["mine"]["channels"] == 1 and cfg["image_datasets"]["mine"]["size"] == 16


def test_overrides_merge_per_dataset():
    cfg = config.validate(
        {"datasets": ["mnist", "cifar10"], "overrides": {"cifar10": {"vae": {"spatial": {"epochs": 7}}}}}
    )
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
    cfg = {
        "datasets": ["synthetic"],
        "codebook": {"K": 8, "train_images": 100},
        "overrides": {"synthetic": {"vae": {"spatial": {"epochs": 2, "channels": [4, 8]}}}},
    }
    flipped = {
        "overrides": {"synthetic": {"vae": {"spatial": {"channels": [4, 8], "epochs": 2}}}},
        "codebook": {"train_images": 100, "K": 8},
        "datasets": ["synthetic"],
    }
    a, b = config.validate(cfg), config.validate(flipped)
    assert repr(a) == repr(b)
    for section in ("vae", "codebook", "graph", "medoids"):
        assert repr(config.dataset_config(a, "synthetic")[section]) == repr(
            config.dataset_config(b, "synthetic")[section]
        )


# ---------------------------------------------------------------- values from `snakemake --config`
def cli(*entries):
    """The config Snakemake builds from ``--config`` entries (its own parser: nested values and
    lowercase booleans stay strings)."""
    from snakemake.cli import parse_config

    return parse_config(list(entries))


def test_command_line_values_parsed_by_schema_type():
    cfg = config.validate(
        cli(
            "seeds=[0,1,2]",
            "download=false",
            'codebook={"K": 256, "train_images": null}',
            "datasets=[mnist,fashionmnist]",
            'vae={"vanilla": {"lr": 1e-3, "hidden": 64}}',
            'graph={"bridge": false, "k": 5}',
            'prior={"sample": {"top_k": 7}}',
            'rate_distortion={"Ks": [4, 8]}',
        )
    )
    assert cfg["seeds"] == [0, 1, 2] and cfg["download"] is False
    assert cfg["codebook"]["K"] == 256 and cfg["codebook"]["train_images"] is None
    assert cfg["codebook"]["kmeans_iters"] == 25  # the rest of the section: defaults
    assert cfg["datasets"] == ["mnist", "fashionmnist"]
    assert cfg["vae"]["vanilla"]["lr"] == 1e-3 and cfg["vae"]["vanilla"]["hidden"] == 64
    assert cfg["graph"]["bridge"] is False and cfg["graph"]["k"] == 5
    assert cfg["prior"]["sample"]["top_k"] == 7 and cfg["rate_distortion"]["Ks"] == [4, 8]


def test_command_line_equals_config_file():
    """Whatever a config file may say, the same words on the command line give the same config."""
    typed = {
        "seeds": [0, 1],
        "download": False,
        "codebook": {"K": 8},
        "vae": {"spatial": {"channels": [4, 8], "lr": 0.01}},
        "overrides": {"mnist": {"vae": {"spatial": {"epochs": 3}}}},
        "dataset_options": {"channels": 3},
    }
    from_cli = cli(
        "seeds=[0,1]",
        "download=false",
        'codebook={"K": 8}',
        'vae={"spatial": {"channels": [4, 8], "lr": 0.01}}',
        'overrides={"mnist": {"vae": {"spatial": {"epochs": 3}}}}',
        'dataset_options={"channels": 3}',
    )
    assert from_cli != typed  # Snakemake really does hand over strings
    a, b = config.validate(from_cli), config.validate(typed)
    assert a == b and repr(a) == repr(b)
    assert config.dataset_config(a, "mnist")["vae"]["spatial"]["epochs"] == 3


def test_whole_values_as_strings():
    cfg = config.validate(
        {
            "seeds": "[0,1,2]",
            "codebook": '{"K": 8}',
            "threads": "3",
            "gpu": "0",
            "vae": {"vanilla": {"lr": "1e6", "beta": ".5"}},
        }
    )
    assert cfg["seeds"] == [0, 1, 2] and cfg["codebook"]["K"] == 8 and cfg["threads"] == 3 and cfg["gpu"] == 0
    assert cfg["vae"]["vanilla"]["lr"] == 1e6 and cfg["vae"]["vanilla"]["beta"] == 0.5


def test_strings_kept_where_the_schema_wants_strings():
    cfg = config.validate({"data_dir": "007", "device": "cpu", "graph": {"symmetrize": "mutual"}})
    assert cfg["data_dir"] == "007" and cfg["device"] == "cpu" and cfg["graph"]["symmetrize"] == "mutual"


@pytest.mark.parametrize(
    "entries,key,needle",
    [
        (['codebook={"K": x}'], "codebook.K", "expected integer, got 'x'"),
        (["seeds=[0,a]"], "seeds.1", "expected integer"),
        (["download=maybe"], "download", "expected boolean"),
        (['codebook={"K": yes}'], "codebook.K", "expected integer, got 'yes'"),  # not True == 1
        (['codebook={"K": 0}'], "codebook.K", "minimum"),
        (['vae={"vanilla": {"lr": fast}}'], "vae.vanilla.lr", "expected number"),
        (
            ['overrides={"mnist": {"vae": {"spatial": {"epochs": ten}}}}'],
            "overrides.mnist.vae.spatial.epochs",
            "expected integer",
        ),
        (["seeds=[0,1"], "seeds", "expected array"),
    ],
)
def test_bad_command_line_value_names_key(entries, key, needle):
    with pytest.raises(GeovqError) as e:
        config.validate(cli(*entries))
    msg = str(e.value)
    assert f"config key '{key}'" in msg and needle in msg and "\n" not in msg, msg


def readme_config_examples():
    """The README's `snakemake --config ...` command lines, as argument lists after `--config`."""
    import shlex

    lines = [ln.split("#")[0] for ln in (ROOT / "README.md").read_text().splitlines()]
    return [shlex.split(ln)[2:] for ln in lines if ln.startswith(".venv/bin/snakemake --config ")]


@pytest.mark.slow
def test_command_line_examples_plan_jobs(tmp_path):
    """The README's --config examples (and a few more) as dry runs against config/test.yaml:
    each plans the jobs its values ask for; a bad value still stops naming the key."""
    from conftest import run_snakemake

    examples = readme_config_examples()
    assert len(examples) >= 2 and any("seeds=[0,1,2]" in ex for ex in examples), examples

    def plan(*entries):
        proc = run_snakemake(
            tmp_path,
            "-n",
            "--quiet",
            "rules",
            "--config",
            *entries,
            configfile=ROOT / "config" / "test.yaml",
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{entries}:\n{out[-3000:]}"
        return {p[0]: int(p[1]) for p in (ln.split() for ln in out.splitlines()) if len(p) == 2 and p[1].isdigit()}

    for entries in examples:
        jobs = plan(*entries)
        assert jobs.get("train_vae", 0) >= 1, (entries, jobs)
    jobs = plan(
        "seeds=[0,1]",
        "download=false",
        'codebook={"K": 8}',
        'vae={"spatial": {"epochs": 3}}',
        "datasets=[synthetic,mnist]",
    )
    assert jobs["prepare_data"] == 2 and jobs["train_vae"] == 2 * 2 * 2  # datasets x variants x seeds
    proc = run_snakemake(
        tmp_path, "-n", "--config", 'codebook={"K": x}', configfile=ROOT / "config" / "test.yaml", check=False
    )
    assert proc.returncode != 0 and "config key 'codebook.K': expected integer, got 'x'" in proc.stdout + proc.stderr

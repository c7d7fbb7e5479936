# Config validation, wildcard constraints, paths and the list of final targets.
import os
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the library, also when not pip-installed

from snakemake.exceptions import WorkflowError

import geovq.config
from geovq.io import GeovqError

try:
    geovq.config.validate(config)  # fills defaults in place, rejects unknown keys
except GeovqError as e:
    raise WorkflowError(str(e)) from None

RESULTS = "results"
RUN = f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}"  # one trained VAE and everything built on it
QRUN = f"{RUN}/{{quantizer}}"


def lib(*modules):
    """The library modules a job runs, listed as its inputs so that editing one reruns that job and what follows."""
    return [str(Path(workflow.basedir) / "geovq" / f"{m}.py") for m in ("__init__", "io", "stages", *modules)]


def dcfg(wildcards, section):
    """A config section as the jobs of ``wildcards.dataset`` see it (overrides merged)."""
    return geovq.config.dataset_config(config, wildcards.dataset)[section]


def run_dirs():
    return expand(RUN, dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])


def final_targets():
    """The table (which pulls in every run) and the report's figures and analyses."""
    return [f"{RESULTS}/tables/metrics.csv", f"{RESULTS}/tables/metrics.md"] + report_targets()


def lengths_file(wc):
    """The edge lengths a geodesic quantizer runs on."""
    return f"{RUN}/graph/knn.npz" if wc.quantizer == "graph" else f"{RUN}/graph/lengths_riemannian.npz"


def generative_targets():
    """Sample quality of every prior (with its test NLL) and the continuous-VAE reference rows."""
    runs = dict(dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])
    return expand(f"{QRUN}/prior/sample_quality.json", quantizer=config["quantizers"], **runs) + expand(
        f"{RUN}/vae/recon_quality.json", **runs
    )


def per_quantizer(pattern, quantizers=None):
    """One input file per quantizer of this run (in config order)."""
    qs = quantizers or config["quantizers"]
    return lambda wc: [pattern.format(quantizer=q, **wc) for q in qs]


GEODESIC_QS = [q for q in config["quantizers"] if q in ("graph", "riemannian")]
POSTHOC_QS = [q for q in config["quantizers"] if q != "vqvae"]
FIG = f"{RUN}/figures"


def labels(**extra):
    return {"dataset": "{dataset}", "variant": "{variant}", "seed": "{seed}", **extra}


def report_targets():
    runs = dict(dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])
    targets = expand(f"{FIG}/reconstructions.png", **runs)
    if "riemannian" in config["quantizers"] and "graph" in config["quantizers"]:
        targets += expand(f"{RUN}/analysis/latent_map.png", **runs)
    return targets


def decoder_of(wc):
    """Where a quantizer's code vectors become images: the VQ-VAE's own decoder, else the VAE's."""
    return (f"{QRUN}/model.pt" if wc.quantizer == "vqvae" else f"{RUN}/vae/model.pt").format(**wc)


def latents_test_of(wc):
    """The continuous test latents a quantizer's codes approximate: the VQ-VAE's z_e, else the VAE's mu."""
    return (f"{QRUN}/latents_test.npz" if wc.quantizer == "vqvae" else f"{RUN}/vae/latents_test.npz").format(**wc)


def vqvae_arch(wc):
    """The VAE variant's architecture keys only: the VQ-VAE shares them, not the VAE's training settings."""
    from geovq.train import ARCH_KEYS

    vae = dcfg(wc, "vae")[wc.variant]
    return {k: vae[k] for k in ARCH_KEYS[wc.variant]}


def retry_mem(mb):
    """mem_mb of a job: `mb` MB times the attempt (profile `retries: 2` -> mb, 2*mb, 3*mb)."""
    return lambda wildcards, attempt: mb * attempt


def gpu_resources():
    """Resources of a job that can use a GPU: config `gpu: N` (0, the default: none). With the SLURM
    executor `gpu` becomes `sbatch --gpus=N`; locally it limits nothing unless --resources gpu=N."""
    return {"gpu": config["gpu"]} if config["gpu"] else {}

# Config validation, wildcard constraints, paths and the list of final targets.
import os
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, workflow.basedir)  # the library, also when not pip-installed

from snakemake.exceptions import WorkflowError

import geovq.codedeps
import geovq.config
import geovq.images
import geovq.quantizers as Q
import geovq.scheduling
from geovq.io import GeovqError

geovq.scheduling.patch_reevaluation_timers()  # one wake-up timer, not one per round (the module says why)

try:
    geovq.config.validate(config)  # fills defaults in place, rejects unknown keys
    for i, spec in enumerate(config["contrasts"]):
        for side in ("a", "b"):
            q, a = spec[side].split("/")
            if q not in Q.QUANTIZERS or a not in Q.get(q).assigns:
                raise GeovqError(
                    f"config key 'contrasts.{i}.{side}': {spec[side]!r} is not a quantizer/assign of "
                    + ", ".join(f"{n}/{x}" for n, x in Q.evaluations(Q.QUANTIZERS))
                )
except GeovqError as e:
    raise WorkflowError(str(e)) from None

RESULTS = "results"
RUN = f"{RESULTS}/{{dataset}}/{{variant}}/seed{{seed}}"  # one trained VAE and everything built on it
QRUN = f"{RUN}/{{quantizer}}"
EVAL = f"{QRUN}/eval/{{assign}}"  # one quantizer scored under one test assignment rule (Q.ASSIGNS)
QS = config["quantizers"]
EVALS = Q.evaluations(QS, config["assignment"]["decode"])  # every (quantizer, assign) a run scores
GEODESIC_QS = Q.geodesic(QS)
POSTHOC_QS = Q.posthoc(QS)
# wildcard constraints of the rules that build codebooks (every quantizer they can build, configured or not)
EUCLIDEAN = "|".join(Q.built_by("euclidean_codebook", Q.QUANTIZERS))
GEODESIC = "|".join(Q.geodesic(Q.QUANTIZERS))
METRIC = "|".join(Q.metrics(Q.QUANTIZERS))  # the decoder pull-back metrics of edge lengths
METRIC_KINDS = "|".join(Q.METRIC_KINDS)  # every decoder pull-back metric kind


def code_inputs(rule):
    """The geovq files a job of ``rule`` can run, as its inputs: editing one reruns that job and what
    follows, editing any other reruns none. Read from the imports of the rule's stage (geovq.codedeps)."""
    try:
        paths = geovq.codedeps.code_inputs(rule, workflow.basedir)
    except ValueError as e:
        raise WorkflowError(str(e)) from None
    return [str(Path(workflow.basedir) / p) for p in paths]


def dcfg(wildcards, section):
    """A config section as the jobs of ``wildcards.dataset`` see it (overrides merged)."""
    return geovq.config.dataset_config(config, wildcards.dataset)[section]


def image_dataset_of(wildcards):
    """The config image_datasets entry of wildcards.dataset: None for a built-in dataset."""
    return config["image_datasets"].get(wildcards.dataset)


def image_files(wildcards):
    """Every file of an image dataset (none for a built-in one): editing, adding or removing one reruns it."""
    spec = image_dataset_of(wildcards)
    return geovq.images.source_files(spec) if spec else []


def run_dirs():
    return expand(RUN, dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])


def final_targets():
    """The tables (which pull in every run), the study's answer and the report's figures and analyses."""
    tables = [f"{RESULTS}/tables/{t}" for t in ("metrics.csv", "metrics.md", "summary.md", "contrasts.md", "answer.md")]
    return tables + report_targets()


def evaluations_of(pattern):
    """``pattern`` for every dataset x variant x seed x (quantizer, assign) the config scores."""
    return [
        pattern.format(dataset=d, variant=v, seed=s, quantizer=q, assign=a)
        for d in config["datasets"]
        for v in config["variants"]
        for s in config["seeds"]
        for q, a in EVALS
    ]


def lengths_file(wc):
    """The edge lengths a geodesic quantizer runs on."""
    kind = Q.get(wc.quantizer).edge_lengths
    return f"{RUN}/graph/knn.npz" if kind == "euclidean" else f"{RUN}/graph/lengths_{kind}.npz"


def codes_test_of(wc):
    """The test codes of one (quantizer, assign): its own codes, or a geodesic codebook's nearest-code ones."""
    native = Q.get(wc.quantizer).native_assign == wc.assign
    return f"{QRUN}/codes_test.npz" if native else f"{QRUN}/codes_test_{wc.assign}.npz"


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


FIG = f"{RUN}/figures"


def labels(**extra):
    return {"dataset": "{dataset}", "variant": "{variant}", "seed": "{seed}", **extra}


def rd_seeds():
    """The seeds of the rate-distortion sweep: the first ``rate_distortion.seeds`` (null: all)."""
    n = config["rate_distortion"]["seeds"]
    return config["seeds"][:n] if n else config["seeds"]


def rd_sweeps():
    """Every rate-distortion sweep: post-hoc quantizers at every K, the VQ-VAE at the main K."""
    return expand(
        f"{QRUN}/rate_distortion.npz",
        dataset=config["datasets"],
        variant=config["variants"],
        seed=rd_seeds(),
        quantizer=QS,
    )


def report_targets():
    """Figures of every run; the study's analyses (K sweep, latent map, geometry sheet) of the first seed only."""
    runs = dict(dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])
    targets = expand(f"{FIG}/reconstructions.png", **runs)
    if "riemannian" in QS and "graph" in QS:
        targets += expand(f"{RUN}/analysis/latent_map.png", **{**runs, "seed": config["seeds"][:1]})
    if GEODESIC_QS:  # the geometry sheet: about the kNN graph and its edge-length kinds
        targets += expand(f"{RUN}/analysis/geometry.png", **{**runs, "seed": config["seeds"][:1]})
    if POSTHOC_QS:  # rate-distortion across K
        targets += [f"{RESULTS}/tables/rate_distortion.md", f"{RESULTS}/tables/rate_distortion_contrasts.md"]
        targets += expand(
            f"{RESULTS}/{{dataset}}/{{variant}}/rate_distortion.png",
            dataset=config["datasets"],
            variant=config["variants"],
        )
    return targets


def decoder_of(wc, quantizer=None):
    """Where a quantizer's code vectors become images: the VQ-VAE's own decoder, else the VAE's."""
    q = quantizer or wc.quantizer
    path = f"{QRUN}/model.pt" if Q.get(q).decoder == "vqvae" else f"{RUN}/vae/model.pt"
    return path.format(dataset=wc.dataset, variant=wc.variant, seed=wc.seed, quantizer=q)


def latents_test_of(wc):
    """The continuous test latents a quantizer's codes approximate: the VQ-VAE's z_e, else the VAE's mu."""
    own = Q.get(wc.quantizer).decoder == "vqvae"
    return (f"{QRUN}/latents_test.npz" if own else f"{RUN}/vae/latents_test.npz").format(**wc)


def vqvae_arch(wc):
    """The VAE variant's architecture keys: the VQ-VAE shares them."""
    from geovq.train import ARCH_KEYS

    vae = dcfg(wc, "vae")[wc.variant]
    return {k: vae[k] for k in ARCH_KEYS[wc.variant]}


def vqvae_training(wc):
    """The VQ-VAE's training settings: epochs, batch size, lr and validation split are the VAE's."""
    return Q.baseline_training(dcfg(wc, "vae")[wc.variant], dcfg(wc, "vqvae")[wc.variant])


def retry_mem(mb):
    """mem_mb of a job: `mb` MB times the attempt (profile `retries: 2` -> mb, 2*mb, 3*mb)."""
    return lambda wildcards, attempt: mb * attempt


def gpu_resources():
    """Resources of a job that can use a GPU: config `gpu: N` (0, the default: none). With the SLURM
    executor `gpu` becomes `sbatch --gpus=N`; locally it limits nothing unless --resources gpu=N."""
    return {"gpu": config["gpu"]} if config["gpu"] else {}


def rd_inputs(wc):
    """What one quantizer's sweep reads: its main-K codebook and test codes (reused at the main K),
    the fit cells, and for geodesic quantizers the graph they run on."""
    q = Q.get(wc.quantizer)
    f = lambda p, **kw: p.format(**{**dict(wc.items()), **kw})
    d = {
        "test": f(f"{RESULTS}/{{dataset}}/data/test.npz"),
        "codebook": f(f"{QRUN}/codebook.npz"),
        "codes_test": [f(codes_test_of(SimpleNamespace(quantizer=q.name, assign=a))) for a in q.swept_assigns],
        "model": decoder_of(wc),
        "latents_test": latents_test_of(wc),
    }
    if q.posthoc:
        d["cells"] = f(f"{RUN}/cells.npz")
    else:  # the VQ-VAE encodes the fit cells' train images (the same cell ids) for its code distribution
        d["train"] = f(f"{RESULTS}/{{dataset}}/data/train.npz")
    if q.geodesic:
        d["lengths"] = f(lengths_file(wc))
        d["voronoi"] = f(f"{QRUN}/voronoi.npz")
    if q.metric:  # the pull-back metric of the test cells' links
        d["vae"] = f(f"{RUN}/vae/model.pt")
    if "metric" in q.swept_assigns:  # the test and fit cells' metrics: the metric rule at every K
        d["metrics_test"] = metrics_test_of(wc)
        shared = fit_metrics_of(wc)
        if shared:  # the fit cells' metrics as the run's pull-back graph holds them (its nodes)
            # ancient: a new graph (config graph.k) leaves its nodes' metrics as they were; they
            # change only with the VAE, the fit cells or the metric's code, which the sweep reads too
            d["metrics_fit"] = ancient(shared)
        elif not q.metric:
            d["latents_train"] = f(f"{RUN}/vae/latents_train.npz")
    return d


def fit_metrics_of(wc):
    """The graph lengths file that holds a post-hoc quantizer's fit-cell metrics of its metric rule:
    lengths_{kind}.npz, whose nodes are the run's fit cells, when the run builds it anyway (a
    quantizer with that pull-back metric is in config quantizers); None otherwise (the sweep
    computes them). The same numbers either way: the same call on the same cells."""
    q = Q.get(wc.quantizer)
    kind = assign_metric_of(wc)
    if not q.posthoc or q.metric or kind not in Q.metrics(QS):
        return None
    return f"{RUN}/graph/lengths_{kind}.npz".format(**dict(wc.items()))


def assign_metric_of(wc):
    """The pull-back metric kind of a quantizer's metric and decode rules (its own, or config assignment.metric)."""
    return Q.get(wc.quantizer).assign_metric(dcfg(wc, "assignment")["metric"])


def metrics_test_of(wc):
    """The test cells' metrics a quantizer's metric and decode rules read: its decoder's, of its kind."""
    model = "vqvae" if Q.get(wc.quantizer).decoder == "vqvae" else "vae"
    return f"{RUN}/{model}/metrics_test_{assign_metric_of(wc)}.npz".format(**dict(wc.items()))


def geodesic_codes_metrics(wc):
    """The test cells' metrics that a pull-back quantizer's geodesic test codes link with (rule test_metrics)."""
    q = Q.get(wc.quantizer)
    if q.metric is None or dcfg(wc, "graph")["new_point_metric"] != "exact":
        return {}
    return {"metrics_test": f"{RUN}/vae/metrics_test_{q.metric}.npz".format(**dict(wc.items()))}


def assign_inputs(wc):
    """What one quantizer's codes under another assignment rule read."""
    f = lambda p: p.format(**dict(wc.items()))
    d = {
        "codebook": f(f"{QRUN}/codebook.npz"),
        "codes_test": f(f"{QRUN}/codes_test.npz"),
        "latents_test": latents_test_of(wc),
    }
    if wc.assign != "nearest":
        d["metrics"] = metrics_test_of(wc)
    if wc.assign == "decode":
        d["model"] = decoder_of(wc)
    return d


def rd_sweeps_of(wc):
    """The sweeps of one dataset x variant (every swept seed and configured quantizer)."""
    return expand(f"{QRUN}/rate_distortion.npz", dataset=wc.dataset, variant=wc.variant, seed=rd_seeds(), quantizer=QS)

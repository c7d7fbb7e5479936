"""Quantizer `fisher`: the Fisher–Rao pull-back metric of the Bernoulli decoder against independent
oracles (reverse-mode Jacobians of the logits, a decoder with linear logits in closed form), its
stages, its place in the quantizer table and the jobs it adds to the plan."""

import copy

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import geovq.quantizers as Q
from conftest import ROOT, planned_jobs
from geovq.models import SpatialVAE
from geovq.riemann import METHODS, METRICS, cell_metrics, edge_lengths_from_metrics, new_point_lengths, pullback
from test_riemann import _knn_csr, _randomize_bn, _rel_err

# torch's forward-mode AD scripts its jvp decompositions on first use (torch-internal)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def small_spatial_vae(seed=0):
    """A pipeline SpatialVAE (1x8x8 images, 3 x 2x2 latent grid; its 2x upsamplings are fused by
    for_jvp, so "stacked" returns pixels permuted), with logits spread from saturated to uncertain."""
    torch.manual_seed(seed)
    vae = SpatialVAE((1, 8, 8), latent_channels=3, grid=2, channels=(4, 5))
    _randomize_bn(vae, seed=seed + 1)
    with torch.no_grad():
        last = vae.decoder.stages[-1][-1]
        last.weight.mul_(4.0)
        last.bias.copy_(torch.tensor([1.5]))
    return vae.eval()


def oracle_metrics(vae, Z, cells, kind):
    """J_ηᵀ diag(w) J_η in float64, J_η of the logits by reverse-mode torch.autograd.functional.jacobian
    of the whole image, sliced to the cell; w = p(1 − p) (fisher) or (p(1 − p))² (riemannian:
    J_μ = diag(p(1 − p)) J_η for the mean μ = sigmoid(η))."""
    m = copy.deepcopy(vae).double().eval()
    Z = torch.as_tensor(Z, dtype=torch.float64)
    _, _, H, W = Z.shape
    out = []
    for cell in cells:
        n, hw = divmod(int(cell), H * W)
        h, w = divmod(hw, W)
        J = torch.autograd.functional.jacobian(lambda z: m.decode_logits(z[None]).reshape(-1), Z[n], vectorize=True)
        J = J[:, :, h, w]  # (P, C)
        with torch.no_grad():
            p = torch.sigmoid(m.decode_logits(Z[n][None]).reshape(-1))
        wt = p * (1 - p) if kind == "fisher" else (p * (1 - p)) ** 2
        out.append((J.T @ (wt[:, None] * J)).numpy())
    return np.stack(out)


@pytest.fixture(scope="module")
def spatial():
    vae = small_spatial_vae()
    Z = np.random.default_rng(0).normal(size=(4, 3, 2, 2)).astype(np.float32)
    cells = np.arange(Z.shape[0] * 4)
    return vae, Z, cells, {k: oracle_metrics(vae, Z, cells, k) for k in METRICS}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(METRICS))
def test_cell_metrics_of_each_kind_match_reverse_mode_logit_jacobians(spatial, kind, method):
    vae, Z, cells, ref = spatial
    decode, weight = pullback(vae, kind)
    order = np.r_[cells[::-1], cells[:3]]  # out of order, repeated, a partial last chunk
    G = cell_metrics(decode, Z, order, weight=weight, batch_size=5, method=method)
    assert G.shape == (len(order), 3, 3) and np.array_equal(G, G.transpose(0, 2, 1))
    assert _rel_err(G, ref[kind][order]) < 1e-5
    # the two kinds are different metrics here, by more than the tolerance above
    assert _rel_err(ref["fisher"], ref["riemannian"]) > 0.5


def test_the_riemannian_kind_is_the_plain_mean_image_metric(spatial):
    """pullback(model, "riemannian") is the metric the pipeline always computed: JᵀJ of decode."""
    vae, Z, cells, _ = spatial
    decode, weight = pullback(vae, "riemannian")
    assert decode == vae.decode and weight is None
    np.testing.assert_array_equal(cell_metrics(decode, Z, cells, weight=weight), cell_metrics(vae.decode, Z, cells))
    with pytest.raises(ValueError, match="unknown metric kind 'gauss'"):
        pullback(vae, "gauss")


def test_cifar10_config_spatial_vae_and_its_metrics_on_colour_images():
    """config/cifar10.yaml's spatial VAE: 3x32x32 images to an 8x8 grid and back, and both pull-back
    metrics over all 3 colour channels' pixels equal reverse-mode Jacobians (its grid and latent
    channels; narrower convs keep the oracle quick)."""
    from pathlib import Path

    from geovq.config import load
    from geovq.models import build_vae, grid_sizes

    cfg = load(Path(__file__).resolve().parent.parent / "config" / "cifar10.yaml")["vae"]["spatial"]
    assert grid_sizes(32, cfg["grid"]) == [32, 16, 8] and len(cfg["channels"]) == 2
    vae = build_vae("spatial", (3, 32, 32), cfg).eval()
    with torch.no_grad():
        mu, _ = vae.encode(torch.rand(2, 3, 32, 32))
        assert mu.shape == (2, cfg["latent_channels"], 8, 8) and vae.decode(mu).shape == (2, 3, 32, 32)
    torch.manual_seed(1)
    small = build_vae("spatial", (3, 32, 32), {**cfg, "channels": [6, 5]})
    _randomize_bn(small, seed=2)
    small.eval()
    Z = np.random.default_rng(1).normal(size=(2, cfg["latent_channels"], 8, 8)).astype(np.float32)
    cells = np.array([0, 64 + 27, 127])  # a corner and an inner cell of one image, a corner of the other
    for kind in METRICS:
        decode, weight = pullback(small, kind)
        G = cell_metrics(decode, Z, cells, weight=weight, batch_size=2)
        assert G.shape == (3, 8, 8) and _rel_err(G, oracle_metrics(small, Z, cells, kind)) < 1e-5, kind


class LinearLogits(nn.Module):
    """Bernoulli decoder with logits η = A z + b on a (C, 1, 1) grid, like geovq.models' decoders."""

    def __init__(self, A, b):
        super().__init__()
        P, C = A.shape
        self.decoder = nn.Sequential(nn.Flatten(), nn.Linear(C, P))
        with torch.no_grad():
            self.decoder[1].weight.copy_(torch.as_tensor(A))
            self.decoder[1].bias.copy_(torch.as_tensor(b))

    def decode_logits(self, z):
        return self.decoder(z).view(z.shape[0], 1, -1, 1)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))


def test_linear_logits_lengths_in_closed_form():
    """η = A z + b: G(z) = Aᵀ W(z) A, W = diag(p(1 − p)), p = sigmoid(A z + b), so an edge is
    ½(sqrt(ΔᵀAᵀW_iAΔ) + sqrt(ΔᵀAᵀW_jAΔ)); for graph edges and for links of new points."""
    rng = np.random.default_rng(4)
    N, M, C, P, k = 40, 6, 3, 12, 5
    A, b = rng.normal(size=(P, C)), 2.0 * rng.normal(size=P)  # p from saturated to 1/2
    model = LinearLogits(A, b).double()
    x = rng.normal(size=(N + M, C))
    Z = x[:, :, None, None]

    def W(x_):
        p = 1 / (1 + np.exp(-(x_ @ A.T + b)))
        return p * (1 - p)  # (n, P)

    def q(d, x_):  # Δᵀ Aᵀ W(x) A Δ per row
        Ad = d @ A.T
        return np.einsum("ep,ep->e", Ad * W(x_), Ad)

    decode, weight = pullback(model, "fisher")
    metrics = cell_metrics(decode, Z, np.arange(N + M), weight=weight, dtype=torch.float64)
    assert _rel_err(metrics, np.einsum("pc,np,pd->ncd", A, W(x), A)) < 1e-6  # stored as float32

    graph, nbr = _knn_csr(x[:N], k)
    L = edge_lengths_from_metrics(graph, x[:N], metrics[:N]).tocoo()
    i, j = L.row, L.col
    d = x[j] - x[i]
    np.testing.assert_allclose(L.data, 0.5 * (np.sqrt(q(d, x[i])) + np.sqrt(q(d, x[j]))), rtol=1e-5)

    nbr_new = np.argsort(((x[N:, None] - x[None, :N]) ** 2).sum(-1), axis=1)[:, :k]
    L_new = new_point_lengths(metrics[N:], x[N:], metrics[:N], x[:N], nbr_new)
    d = x[nbr_new] - x[N:, None]  # (M, k, C)
    x_new = np.repeat(x[N:], k, axis=0)
    expect = 0.5 * (np.sqrt(q(d.reshape(-1, C), x_new)) + np.sqrt(q(d.reshape(-1, C), x[nbr_new.ravel()])))
    np.testing.assert_allclose(L_new, expect.reshape(M, k), rtol=1e-5)


def test_the_quantizer_table_knows_fisher():
    from geovq.config import load_schema, validate

    q = Q.get("fisher")
    assert q.geodesic and q.posthoc and q.codebook_rule == "geodesic_medoids" and q.decoder == "vae"
    assert q.assigns == ("geodesic", "nearest", "metric", "decode") and q.native_assign == "geodesic"
    assert q.metric == "fisher" and Q.get("riemannian").metric == "riemannian" and Q.get("graph").metric is None
    assert Q.metrics(Q.QUANTIZERS) == ["riemannian", "fisher"]
    # every pull-back metric the table names is one the library computes
    assert set(Q.metrics(Q.QUANTIZERS)) <= set(METRICS) and Q.METRIC_KINDS == tuple(METRICS)
    # the config schema accepts exactly the table's quantizers
    schema = load_schema()
    assert schema["properties"]["quantizers"]["items"]["enum"] == list(Q.QUANTIZERS)
    contrasts = {(c["a"], c["b"]) for c in validate({})["contrasts"]}
    assert {("fisher/geodesic", "riemannian/geodesic"), ("fisher/geodesic", "fisher/nearest")} <= contrasts


# ---------------------------------------------------------------- the stages
def test_stages_measure_and_link_with_the_metric_of_their_wildcard(tmp_path):
    """riemannian_lengths with wildcard metric=fisher stores the Fisher–Rao metrics of the nodes;
    geodesic_codes of quantizer fisher links new cells with Fisher–Rao metrics at both ends."""
    from types import SimpleNamespace

    from geovq.artifacts import load_graph
    from geovq.codebook import to_cells
    from geovq.graph import knn_query
    from geovq.stages.codebook import train_cells
    from geovq.stages.assign import test_metrics
    from geovq.stages.geodesic import geodesic_codes, geodesic_medoids, knn_graph, riemannian_lengths
    from geovq.stages.runner import entry
    from geovq.voronoi import assign_new
    from geovq.train import load_vae, save_vae
    from test_stage_errors import DEFAULTS, GRAPH_OUT, graph_params, job, latents

    vae = small_spatial_vae(seed=5)
    arch = {"latent_channels": 3, "grid": 2, "channels": [4, 5]}
    save_vae(tmp_path / "model.pt", vae, "spatial", arch, dataset="synthetic", image_shape=(1, 8, 8))
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(30, 3, 2, 2)).astype(np.float32)
    mu_test = rng.normal(size=(8, 3, 2, 2)).astype(np.float32)
    train = latents(tmp_path / "latents_train.npz", mu)
    test = latents(tmp_path / "latents_test.npz", mu_test)
    entry(job(tmp_path, "train_cells", {"latents_train": train}, {"cells": "cells.npz"}, fit_cells=None), train_cells)
    g = graph_params(k=6)
    entry(job(tmp_path, "knn_graph", {"cells": str(tmp_path / "cells.npz")}, GRAPH_OUT, graph=g), knn_graph)
    model = load_vae(tmp_path / "model.pt")
    for kind in METRICS:
        smk = job(
            tmp_path,
            "riemannian_lengths",
            {"graph": str(tmp_path / "knn.npz"), "latents_train": train, "model": str(tmp_path / "model.pt")},
            {"lengths": f"lengths_{kind}.npz"},
            precision="float32",
            device="cpu",
        )
        smk.wildcards = SimpleNamespace(metric=kind)  # the runner hands stages their wildcards
        entry(smk, riemannian_lengths)
        _, d = load_graph(tmp_path / f"lengths_{kind}.npz", ("nodes", "x", "metrics"))
        decode, weight = pullback(model, kind)
        np.testing.assert_allclose(d["metrics"], cell_metrics(decode, mu, d["nodes"], weight=weight), rtol=1e-6)
    # graph.metric_precision reaches the metrics (rule riemannian_lengths' param precision)
    smk = job(
        tmp_path,
        "riemannian_lengths",
        {"graph": str(tmp_path / "knn.npz"), "latents_train": train, "model": str(tmp_path / "model.pt")},
        {"lengths": "lengths_bf16.npz"},
        precision="bfloat16",
        device="cpu",
    )
    smk.wildcards = SimpleNamespace(metric="fisher")
    entry(smk, riemannian_lengths)
    bf16 = load_graph(tmp_path / "lengths_bf16.npz", ("metrics",))[1]["metrics"]
    decode, weight = pullback(model, "fisher")
    np.testing.assert_array_equal(bf16, cell_metrics(decode, mu, d["nodes"], weight=weight, precision="bfloat16"))
    assert not np.array_equal(bf16, d["metrics"])

    entry(
        job(
            tmp_path,
            "geodesic_medoids",
            {"lengths": str(tmp_path / "lengths_fisher.npz")},
            {"codebook": "codebook.npz", "voronoi": "voronoi.npz", "objective": "objective.csv"},
            K=4,
            medoids=DEFAULTS["medoids"],
            threads=1,
        ),
        geodesic_medoids,
    )
    smk = job(
        tmp_path,
        "test_metrics",
        {"model": str(tmp_path / "model.pt"), "latents_test": test},
        {"metrics": "metrics_test_fisher.npz"},
        codebook={"test_images": None},
        precision="float32",
        device="cpu",
        dataset="synthetic",
    )
    smk.wildcards = SimpleNamespace(model="vae", metric="fisher")
    entry(smk, test_metrics)
    entry(
        job(
            tmp_path,
            "geodesic_codes",
            {
                "metrics_test": str(tmp_path / "metrics_test_fisher.npz"),
                "lengths": str(tmp_path / "lengths_fisher.npz"),
                "voronoi": str(tmp_path / "voronoi.npz"),
                "codebook": str(tmp_path / "codebook.npz"),
                "latents_train": train,
                "latents_test": test,
                "model": str(tmp_path / "model.pt"),
            },
            {"codes_train": "codes_train.npz", "codes_test": "codes_test.npz"},
            quantizer="fisher",
            graph=g,
            codebook={**DEFAULTS["codebook"], "train_images": None, "test_images": None},
            device="cpu",
        ),
        geodesic_codes,
    )
    # the oracle: the library's link of every test cell, with each kind's metrics at both ends
    _, d = load_graph(tmp_path / "lengths_fisher.npz", ("nodes", "x", "metrics"))
    vor = np.load(tmp_path / "voronoi.npz")
    new = np.arange(mu_test.shape[0] * 4)
    nbr, _, _ = knn_query(d["x"], to_cells(mu_test), g["k"], seed=0)
    codes = {}
    for kind in METRICS:
        nodes = load_graph(tmp_path / f"lengths_{kind}.npz", ("metrics",))[1]["metrics"]
        decode, weight = pullback(model, kind)
        lengths = new_point_lengths(
            cell_metrics(decode, mu_test, new, weight=weight), to_cells(mu_test), nodes, d["x"], nbr
        )
        codes[kind] = assign_new(nbr, lengths, vor["dist"], vor["label"])[0]
    assert (codes["fisher"] != codes["riemannian"]).any()  # the metric decides some codes here
    np.testing.assert_array_equal(np.load(tmp_path / "codes_test.npz")["codes"].reshape(-1), codes["fisher"])


# ---------------------------------------------------------------- the plan
def test_adding_fisher_adds_exactly_its_jobs(tmp_path):
    """The dry-run plan of the test config with and without `fisher` differs by the jobs of one
    geodesic quantizer per run, derived from the rules: its lengths and its test cells' metrics (one
    per run for a metric no other configured quantizer uses), medoids, codes, test codes for each
    assignment that is not its own, its prior and samples, one evaluation per assignment, its
    rate-distortion sweep. Nothing else (the figures, the analysis and the tables are one job per run or study
    either way)."""
    cfg = yaml.safe_load((ROOT / "config" / "test.yaml").read_text())
    R = len(cfg["datasets"]) * len(cfg["variants"]) * len(cfg["seeds"])
    without = [q for q in cfg["quantizers"] if q != "fisher"]
    plans = {}
    for name, qs in (("without", without), ("with", without + ["fisher"])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "quantizers": qs}))
        plans[name] = planned_jobs(tmp_path / "work", path)
    q = Q.get("fisher")
    decode = cfg.get("assignment", {}).get("decode", ["kmeans", "riemannian"])
    expected = {
        "riemannian_lengths": R * (q.metric not in Q.metrics(without)),
        "test_metrics": R * (q.metric not in [Q.get(n).assign_metric("riemannian") for n in without]),
        "geodesic_medoids": R,
        "geodesic_codes": R,
        "assign_codes": R * len([a for q_, a in Q.evaluations(["fisher"], decode) if a != q.native_assign]),
        "train_prior": R,
        "sample_prior": R,
        "sample_quality": R,
        "evaluate": R * len(Q.evaluations(["fisher"], decode)),
        "rate_distortion": len(cfg["datasets"])
        * len(cfg["variants"])
        * len(cfg["seeds"][: cfg["rate_distortion"].get("seeds")]),
    }
    rules = set(plans["with"]) | set(plans["without"])
    added = {r: plans["with"].get(r, 0) - plans["without"].get(r, 0) for r in rules}
    assert {r: n for r, n in added.items() if n} == {r: n for r, n in expected.items() if n}, plans
    # one lengths job per run and pull-back metric
    assert plans["with"]["riemannian_lengths"] == R * len(Q.metrics(without + ["fisher"]))

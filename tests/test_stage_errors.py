"""Bad input to the geodesic stages, run as Snakemake runs them (geovq.stages.runner.entry): one line on
stderr naming the file or config key and what was expected, exit status 1, no output written."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from geovq.config import validate
from geovq.io import save_npz
from geovq.stages.runner import entry
from geovq.stages.codebook import train_cells
from geovq.stages.geodesic import geodesic_medoids, knn_graph

DEFAULTS = validate({"datasets": ["synthetic"]})


class Files(SimpleNamespace):
    """Snakemake's named input/output lists: attributes, and iterable over the paths."""

    def __iter__(self):
        return iter(vars(self).values())


def job(tmp_path, rule, inputs, outputs, **params):
    """What a Snakemake ``script:`` job hands to geovq.stages.runner.entry, outputs under tmp_path."""
    return SimpleNamespace(
        rule=rule,
        threads=1,
        config={"threads": 1},
        log=[str(tmp_path / f"{rule}.log")],
        input=Files(**inputs),
        output=Files(**{k: str(tmp_path / v) for k, v in outputs.items()}),
        params=SimpleNamespace(seed=0, **params),
    )


def fails_cleanly(smk, stage, capsys, *needles):
    with pytest.raises(SystemExit) as exc:
        entry(smk, stage)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"geovq error in rule {smk.rule}: "), err
    for needle in needles:
        assert needle in err, err
    for out in smk.output:
        assert not list(Path(out).parent.glob(Path(out).name + "*")), f"{out} (or a temp file of it) was written"
    return err


def latents(path, mu):
    save_npz(path, mu=mu.astype(np.float32), labels=np.zeros(len(mu), np.int64))
    return str(path)


def cells(tmp_path, mu):
    """The train_cells stage over latents ``mu``: every cell (fit_cells null), as knn_graph reads them."""
    path = latents(tmp_path / "latents_train.npz", mu)
    entry(job(tmp_path, "train_cells", {"latents_train": path}, {"cells": "cells.npz"}, fit_cells=None), train_cells)
    return str(tmp_path / "cells.npz")


def two_clusters(n=40, c=3):
    """Two tight blobs 1000 apart: a k=3 graph over them has two components."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, c))
    x[n // 2 :] += 1000.0
    return x.reshape(n, c, 1, 1)


GRAPH_OUT = {"graph": "knn.npz", "info": "knn_info.json"}


def graph_params(**over):
    return {**DEFAULTS["graph"], **over}


def test_nan_latents(tmp_path, capsys):
    mu = two_clusters()
    mu[5, 1] = np.nan
    path = latents(tmp_path / "latents_train.npz", mu)
    smk = job(tmp_path, "train_cells", {"latents_train": path}, {"cells": "cells.npz"}, fit_cells=None)
    fails_cleanly(smk, train_cells, capsys, path, "NaN")


def test_k_not_below_number_of_nodes(tmp_path, capsys):
    path = cells(tmp_path, two_clusters(n=8))
    smk = job(tmp_path, "knn_graph", {"cells": path}, GRAPH_OUT, graph=graph_params(k=8))
    fails_cleanly(
        smk,
        knn_graph,
        capsys,
        "config key 'graph.k'",
        "k=8",
        "number of graph nodes 8",
        "cells.npz",
        "codebook.fit_cells",
    )


def test_disconnected_graph_without_bridging(tmp_path, capsys):
    path = cells(tmp_path, two_clusters())
    smk = job(tmp_path, "knn_graph", {"cells": path}, GRAPH_OUT, graph=graph_params(k=3, bridge=False))
    fails_cleanly(smk, knn_graph, capsys, "2 connected components", "'graph.bridge'")
    # with bridging (the default) the same latents give one connected graph
    smk = job(tmp_path, "knn_graph", {"cells": path}, GRAPH_OUT, graph=graph_params(k=3))
    entry(smk, knn_graph)
    info = json.loads((tmp_path / "knn_info.json").read_text())
    assert info["n_components"] == 2 and info["n_bridges"] == 1


def test_more_codes_than_nodes(tmp_path, capsys):
    path = cells(tmp_path, two_clusters())
    entry(job(tmp_path, "knn_graph", {"cells": path}, GRAPH_OUT, graph=graph_params(k=3)), knn_graph)
    smk = job(
        tmp_path,
        "geodesic_medoids",
        {"lengths": str(tmp_path / "knn.npz")},
        {"codebook": "codebook.npz", "voronoi": "voronoi.npz", "objective": "objective.csv"},
        K=41,
        medoids=DEFAULTS["medoids"],
        threads=1,
    )
    fails_cleanly(smk, geodesic_medoids, capsys, "config key 'codebook.K'", "K=41", "40")


def test_geodesic_codes_of_new_cells_follow_the_extended_graph_not_train_ids(tmp_path):
    """Test cells are coded through the graph extended by them (networkx oracle), never by reusing the
    train label of the cell with the same id: the test latents are the train latents with the images
    in another order. Train cells that are graph nodes keep their Voronoi label."""
    import networkx as nx
    from scipy.spatial.distance import cdist

    from conftest import to_nx
    from geovq.artifacts import load_graph
    from geovq.stages.geodesic import geodesic_codes

    rng = np.random.default_rng(0)
    mu = rng.normal(size=(60, 2, 2, 2)).astype(np.float32)  # 60 images x 4 cells of dim 2
    train = latents(tmp_path / "latents_train.npz", mu)
    perm = rng.permutation(60)
    test = latents(tmp_path / "latents_test.npz", mu[perm])
    entry(job(tmp_path, "train_cells", {"latents_train": train}, {"cells": "cells.npz"}, fit_cells=120), train_cells)
    g = graph_params(k=6)
    entry(job(tmp_path, "knn_graph", {"cells": str(tmp_path / "cells.npz")}, GRAPH_OUT, graph=g), knn_graph)
    entry(
        job(
            tmp_path,
            "geodesic_medoids",
            {"lengths": str(tmp_path / "knn.npz")},
            {"codebook": "codebook.npz", "voronoi": "voronoi.npz", "objective": "objective.csv"},
            K=5,
            medoids=DEFAULTS["medoids"],
            threads=1,
        ),
        geodesic_medoids,
    )
    codebook = {**DEFAULTS["codebook"], "train_images": None, "test_images": None}
    entry(
        job(
            tmp_path,
            "geodesic_codes",
            {
                "lengths": str(tmp_path / "knn.npz"),
                "voronoi": str(tmp_path / "voronoi.npz"),
                "codebook": str(tmp_path / "codebook.npz"),
                "latents_train": train,
                "latents_test": test,
                "model": None,
            },
            {"codes_train": "codes_train.npz", "codes_test": "codes_test.npz"},
            quantizer="graph",
            graph=g,
            codebook=codebook,
            device="cpu",
        ),
        geodesic_codes,
    )
    G, d = load_graph(tmp_path / "knn.npz", ("nodes", "x"))
    vor = np.load(tmp_path / "voronoi.npz")
    medoids = np.load(tmp_path / "codebook.npz")["medoids"]
    # train: nodes keep their Voronoi label
    train_codes = np.load(tmp_path / "codes_train.npz")["codes"].reshape(-1)
    np.testing.assert_array_equal(train_codes[d["nodes"]], vor["label"])
    # test: the oracle, one new cell at a time linked to its k nearest nodes by Euclidean edges
    H = to_nx(G)
    test_cells = mu[perm].transpose(0, 2, 3, 1).reshape(-1, 2)
    test_codes = np.load(tmp_path / "codes_test.npz")["codes"].reshape(-1)
    D = cdist(test_cells, d["x"])
    wrong = 0
    for i, cell in enumerate(test_cells):
        near = np.argsort(D[i], kind="stable")[:6]
        H.add_weighted_edges_from(("new", int(j), float(D[i, j])) for j in near)
        dist = nx.multi_source_dijkstra_path_length(H, {"new"})
        best = min(range(len(medoids)), key=lambda m: dist[int(medoids[m])])
        assert dist[int(medoids[test_codes[i]])] == pytest.approx(dist[int(medoids[best])], rel=1e-5, abs=1e-6), i
        H.remove_node("new")
        wrong += test_codes[i] != train_codes[i]  # what reusing the train code of the same id would give
    assert wrong > len(test_cells) // 4  # the permutation makes id reuse detectably wrong
    np.testing.assert_array_equal(test_codes.reshape(60, 4)[np.argsort(perm)].reshape(-1), train_codes)


def test_stages_get_their_wildcards_as_params():
    """Rules do not restate wildcards as params: the runner hands them over (seed as an int)."""
    from geovq.io import GeovqError
    from geovq.stages.runner import stage_params

    smk = SimpleNamespace(
        rule="evaluate",
        wildcards=SimpleNamespace(dataset="mnist", seed="3", assign="nearest"),
        params=SimpleNamespace(device="cpu"),
    )
    p = stage_params(smk)
    assert (p.dataset, p.seed, p.assign, p.device) == ("mnist", 3, "nearest", "cpu")
    smk.params = SimpleNamespace(dataset="fashionmnist")
    with pytest.raises(GeovqError, match="differ from the wildcards"):
        stage_params(smk)

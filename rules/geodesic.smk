# Geodesic quantizers: `graph` (Euclidean edge lengths) and `riemannian` (decoder-induced).


def lengths_file(wc):
    """The edge lengths a geodesic quantizer runs on."""
    return RUN + ("/graph/knn.npz" if wc.quantizer == "graph" else "/graph/lengths_riemannian.npz")


rule knn_graph:
    """Symmetric kNN graph of train latent cells (seeded subsample), components bridged."""
    input:
        latents_train=RUN + "/vae/latents_train.npz",
        code=lib("graph", "stages_geodesic", "codebook", "data"),
    output:
        graph=RUN + "/graph/knn.npz",
        info=RUN + "/graph/knn_info.json",
    params:
        seed=lambda wc: int(wc.seed),
        graph=lambda wc: {k: v for k, v in dcfg(wc, "graph").items() if k != "new_point_metric"},
        K=lambda wc: dcfg(wc, "codebook")["K"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
    log:
        RUN + "/logs/knn_graph.log",
    benchmark:
        RUN + "/benchmarks/knn_graph.tsv"
    script:
        "../workflow_scripts/knn_graph.py"


rule riemannian_lengths:
    """Decoder pull-back metric of every node (forward-mode AD), then Riemannian edge lengths."""
    input:
        graph=RUN + "/graph/knn.npz",
        latents_train=RUN + "/vae/latents_train.npz",
        model=RUN + "/vae/model.pt",
        code=lib("riemann", "stages_geodesic", "train", "models"),
    output:
        lengths=RUN + "/graph/lengths_riemannian.npz",
    params:
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        gpu=config["gpu"],
    log:
        RUN + "/logs/riemannian_lengths.log",
    benchmark:
        RUN + "/benchmarks/riemannian_lengths.tsv"
    script:
        "../workflow_scripts/riemannian_lengths.py"


rule geodesic_medoids:
    """Geodesic K-medoids: Voronoi assignment by one multi-source Dijkstra pass, medoid updates, swaps."""
    input:
        lengths=lengths_file,
        code=lib("geodesic", "stages_geodesic"),
    output:
        codebook=QRUN + "/codebook.npz",
        voronoi=QRUN + "/voronoi.npz",
        objective=QRUN + "/objective.csv",
    wildcard_constraints:
        quantizer="graph|riemannian",
    params:
        seed=lambda wc: int(wc.seed),
        K=lambda wc: dcfg(wc, "codebook")["K"],
        medoids=lambda wc: dcfg(wc, "medoids"),
    resources:
        mem_mb=4000,
    log:
        QRUN + "/logs/geodesic_medoids.log",
    benchmark:
        QRUN + "/benchmarks/geodesic_medoids.tsv"
    script:
        "../workflow_scripts/geodesic_medoids.py"


rule geodesic_codes:
    """Codes of train and test cells through their graph neighbours (never reused train codes)."""
    input:
        lengths=lengths_file,
        voronoi=QRUN + "/voronoi.npz",
        codebook=QRUN + "/codebook.npz",
        latents_train=RUN + "/vae/latents_train.npz",
        latents_test=RUN + "/vae/latents_test.npz",
        model=RUN + "/vae/model.pt",
        code=lib("geodesic", "graph", "riemann", "stages_geodesic", "codebook", "data"),
    output:
        codes_train=QRUN + "/codes_train.npz",
        codes_test=QRUN + "/codes_test.npz",
    wildcard_constraints:
        quantizer="graph|riemannian",
    params:
        seed=lambda wc: int(wc.seed),
        quantizer="{quantizer}",
        graph=lambda wc: dcfg(wc, "graph"),
        codebook=lambda wc: dcfg(wc, "codebook"),
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
    log:
        QRUN + "/logs/geodesic_codes.log",
    benchmark:
        QRUN + "/benchmarks/geodesic_codes.tsv"
    script:
        "../workflow_scripts/geodesic_codes.py"

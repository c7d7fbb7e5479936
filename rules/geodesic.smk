# Geodesic quantizers: `graph` (Euclidean edge lengths) and `riemannian` (decoder-induced).


rule knn_graph:
    """Symmetric kNN graph of train latent cells (seeded subsample), components bridged."""
    input:
        latents_train=f"{RUN}/vae/latents_train.npz",
        code=lib("graph", "stages_geodesic", "codebook", "data"),
    output:
        graph=f"{RUN}/graph/knn.npz",
        info=f"{RUN}/graph/knn_info.json",
    params:
        seed=lambda wc: int(wc.seed),
        graph=lambda wc: {k: v for k, v in dcfg(wc, "graph").items() if k != "new_point_metric"},
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    log:
        f"{RUN}/logs/knn_graph.log",
    benchmark:
        f"{RUN}/benchmarks/knn_graph.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/knn_graph.py"


rule riemannian_lengths:
    """Decoder pull-back metric of every node (forward-mode AD), then Riemannian edge lengths."""
    input:
        graph=f"{RUN}/graph/knn.npz",
        latents_train=f"{RUN}/vae/latents_train.npz",
        model=f"{RUN}/vae/model.pt",
        code=lib("riemann", "stages_geodesic", "train", "models"),
    output:
        lengths=f"{RUN}/graph/lengths_riemannian.npz",
    params:
        device=config["device"],
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
        **gpu_resources(),
    log:
        f"{RUN}/logs/riemannian_lengths.log",
    benchmark:
        f"{RUN}/benchmarks/riemannian_lengths.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/riemannian_lengths.py"


rule geodesic_medoids:
    """Geodesic K-medoids: Voronoi assignment by one multi-source Dijkstra pass, medoid updates, swaps."""
    input:
        lengths=lengths_file,
        code=lib("geodesic", "stages_geodesic"),
    output:
        codebook=f"{QRUN}/codebook.npz",
        voronoi=f"{QRUN}/voronoi.npz",
        objective=f"{QRUN}/objective.csv",
    wildcard_constraints:
        quantizer="graph|riemannian",
    params:
        seed=lambda wc: int(wc.seed),
        K=lambda wc: dcfg(wc, "codebook")["K"],
        medoids=lambda wc: dcfg(wc, "medoids"),
    resources:
        mem_mb=retry_mem(4000),
    log:
        f"{QRUN}/logs/geodesic_medoids.log",
    benchmark:
        f"{QRUN}/benchmarks/geodesic_medoids.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/geodesic_medoids.py"


rule geodesic_codes:
    """Codes of train and test cells through their graph neighbours (never reused train codes)."""
    input:
        lengths=lengths_file,
        voronoi=f"{QRUN}/voronoi.npz",
        codebook=f"{QRUN}/codebook.npz",
        latents_train=f"{RUN}/vae/latents_train.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
        model=f"{RUN}/vae/model.pt",
        code=lib("geodesic", "graph", "riemann", "stages_geodesic", "codebook", "data"),
    output:
        codes_train=f"{QRUN}/codes_train.npz",
        codes_test=f"{QRUN}/codes_test.npz",
    wildcard_constraints:
        quantizer="graph|riemannian",
    params:
        seed=lambda wc: int(wc.seed),
        quantizer="{quantizer}",
        graph=lambda wc: dcfg(wc, "graph"),
        codebook=lambda wc: dcfg(wc, "codebook"),
        device=config["device"],
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    log:
        f"{QRUN}/logs/geodesic_codes.log",
    benchmark:
        f"{QRUN}/benchmarks/geodesic_codes.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/geodesic_codes.py"

# Geodesic quantizers: `graph` (Euclidean edge lengths), `riemannian` and `fisher` (decoder-induced).


rule knn_graph:
    """Symmetric kNN graph of the shared train cells, components bridged."""
    input:
        cells=f"{RUN}/cells.npz",
        code=code_inputs("knn_graph"),
    output:
        graph=f"{RUN}/graph/knn.npz",
        info=f"{RUN}/graph/knn_info.json",
    log:
        f"{RUN}/logs/knn_graph.log",
    benchmark:
        f"{RUN}/benchmarks/knn_graph.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    params:
        graph=lambda wc: {
            k: v for k, v in dcfg(wc, "graph").items() if k not in ("new_point_metric", "metric_precision")
        },
    script:
        "../workflow_scripts/run_stage.py"


rule riemannian_lengths:
    """One decoder pull-back metric (geovq.riemann.pullback) of every node (forward-mode AD), then the edge lengths it gives."""
    input:
        graph=f"{RUN}/graph/knn.npz",
        latents_train=f"{RUN}/vae/latents_train.npz",
        model=f"{RUN}/vae/model.pt",
        code=code_inputs("riemannian_lengths"),
    output:
        lengths=f"{RUN}/graph/lengths_{{metric}}.npz",
    log:
        f"{RUN}/logs/riemannian_lengths_{{metric}}.log",
    benchmark:
        f"{RUN}/benchmarks/riemannian_lengths_{{metric}}.tsv"
    wildcard_constraints:
        metric=METRIC,
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
    params:
        precision=lambda wc: dcfg(wc, "graph")["metric_precision"],
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule geodesic_medoids:
    """Geodesic K-medoids: Voronoi assignment by one multi-source Dijkstra pass, medoid updates, swaps."""
    input:
        lengths=lengths_file,
        code=code_inputs("geodesic_medoids"),
    output:
        codebook=f"{QRUN}/codebook.npz",
        voronoi=f"{QRUN}/voronoi.npz",
        objective=f"{QRUN}/objective.csv",
    log:
        f"{QRUN}/logs/geodesic_medoids.log",
    benchmark:
        f"{QRUN}/benchmarks/geodesic_medoids.tsv"
    wildcard_constraints:
        quantizer=GEODESIC,
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    params:
        K=lambda wc: dcfg(wc, "codebook")["K"],
        medoids=lambda wc: dcfg(wc, "medoids"),
        threads=config["threads"],
    script:
        "../workflow_scripts/run_stage.py"


rule geodesic_codes:
    """Codes of train and test cells through their graph neighbours (never reused train codes)."""
    input:
        unpack(geodesic_codes_metrics),
        lengths=lengths_file,
        voronoi=f"{QRUN}/voronoi.npz",
        codebook=f"{QRUN}/codebook.npz",
        latents_train=f"{RUN}/vae/latents_train.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
        model=f"{RUN}/vae/model.pt",
        code=code_inputs("geodesic_codes"),
    output:
        codes_train=f"{QRUN}/codes_train.npz",
        codes_test=f"{QRUN}/codes_test.npz",
    log:
        f"{QRUN}/logs/geodesic_codes.log",
    benchmark:
        f"{QRUN}/benchmarks/geodesic_codes.tsv"
    wildcard_constraints:
        quantizer=GEODESIC,
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    params:
        graph=lambda wc: dcfg(wc, "graph"),
        codebook=lambda wc: dcfg(wc, "codebook"),
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

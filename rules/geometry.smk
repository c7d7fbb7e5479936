# The geometry sheet: why geodesic and Euclidean codebooks differ, or do not (geovq.geometry).


rule geometry:
    """Distance ratios, label agreement, neighbourhood preservation and the path-integral check of one VAE's graph."""
    input:
        graph=f"{RUN}/graph/knn.npz",
        lengths=lambda wc: [f"{RUN}/graph/lengths_{m}.npz".format(**wc) for m in Q.metrics(QS)],
        codes_train=per_quantizer(f"{QRUN}/codes_train.npz"),
        model=f"{RUN}/vae/model.pt",
        latents_train=f"{RUN}/vae/latents_train.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
        code=code_inputs("geometry"),
    output:
        ratios=report(
            f"{RUN}/analysis/geometry_ratios.csv",
            caption="../report/geometry.rst",
            category="Geometry",
            labels=labels(table="distance ratios"),
        ),
        agreement=report(
            f"{RUN}/analysis/label_agreement.csv",
            caption="../report/geometry.rst",
            category="Geometry",
            labels=labels(table="label agreement"),
        ),
        neighbourhood=report(
            f"{RUN}/analysis/neighbourhood.csv",
            caption="../report/geometry.rst",
            category="Geometry",
            labels=labels(table="neighbourhood preservation"),
        ),
        path_integral=report(
            f"{RUN}/analysis/path_integral.csv",
            caption="../report/geometry.rst",
            category="Geometry",
            labels=labels(table="trapezoid vs path integral"),
        ),
        figure=report(
            f"{RUN}/analysis/geometry.png",
            caption="../report/geometry.rst",
            category="Geometry",
            labels=labels(figure="geometry sheet"),
        ),
    log:
        f"{RUN}/logs/geometry.log",
    benchmark:
        f"{RUN}/benchmarks/geometry.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
    params:
        metrics=Q.metrics(QS),
        quantizers=QS,
        graph_k=lambda wc: dcfg(wc, "graph")["k"],
        precision=lambda wc: dcfg(wc, "graph")["metric_precision"],
        geometry=lambda wc: dcfg(wc, "geometry"),
        report=lambda wc: dcfg(wc, "report"),
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

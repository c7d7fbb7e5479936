# Rate-distortion across K (geovq.ratedistortion): every post-hoc quantizer refitted at each K of
# config rate_distortion.Ks on the run's fit cells; the VQ-VAE at the main K as a point.


rule rate_distortion:
    """One quantizer refitted at every K on the run's fit cells; per-image rate and distortions of the first test images."""
    input:
        unpack(rd_inputs),
        code=code_inputs("rate_distortion"),
    output:
        sweep=f"{QRUN}/rate_distortion.npz",
    log:
        f"{QRUN}/logs/rate_distortion.log",
    benchmark:
        f"{QRUN}/benchmarks/rate_distortion.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: 1  # K-medoids and Dijkstra are single-threaded; the job computes with one thread
    resources:
        mem_mb=retry_mem(4000),
    params:
        rate_distortion=lambda wc: dcfg(wc, "rate_distortion"),
        codebook=lambda wc: dcfg(wc, "codebook"),
        medoids=lambda wc: dcfg(wc, "medoids") if Q.get(wc.quantizer).geodesic else {},
        graph=lambda wc: dcfg(wc, "graph") if Q.get(wc.quantizer).geodesic else {},
        assign_metric=assign_metric_of,
        metric_precision=lambda wc: dcfg(wc, "graph")["metric_precision"],
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule rate_distortion_table:
    """Every quantizer/assign at every K with intervals over seeds and images; the study's contrasts at every K."""
    input:
        sweeps=rd_sweeps(),
        code=code_inputs("rate_distortion_table"),
    output:
        csv=report(
            f"{RESULTS}/tables/rate_distortion.csv",
            caption="../report/rate_distortion.rst",
            category="Rate-distortion",
        ),
        md=f"{RESULTS}/tables/rate_distortion.md",
        contrasts_csv=report(
            f"{RESULTS}/tables/rate_distortion_contrasts.csv",
            caption="../report/rate_distortion.rst",
            category="Rate-distortion",
        ),
        contrasts_md=f"{RESULTS}/tables/rate_distortion_contrasts.md",
    log:
        f"{RESULTS}/logs/rate_distortion_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/rate_distortion_table.tsv"
    conda:
        "../envs/geovq.yaml"
    params:
        contrasts=config["contrasts"],
        alpha=0.05,
    script:
        "../workflow_scripts/run_stage.py"


rule rate_distortion_figure:
    """Distortion against rate for one dataset x variant, bands over seeds and images."""
    input:
        sweeps=rd_sweeps_of,
        code=code_inputs("rate_distortion_figure"),
    output:
        figure=report(
            f"{RESULTS}/{{dataset}}/{{variant}}/rate_distortion.png",
            caption="../report/rate_distortion.rst",
            category="Rate-distortion",
            labels={"dataset": "{dataset}", "variant": "{variant}", "figure": "rate-distortion"},
        ),
    log:
        f"{RESULTS}/{{dataset}}/{{variant}}/logs/rate_distortion_figure.log",
    benchmark:
        f"{RESULTS}/{{dataset}}/{{variant}}/benchmarks/rate_distortion_figure.tsv"
    conda:
        "../envs/geovq.yaml"
    params:
        report=lambda wc: dcfg(wc, "report"),
        alpha=0.05,
    script:
        "../workflow_scripts/run_stage.py"

# The study: summary over seeds, paired contrasts with intervals, and the written answer.


rule study_tables:
    """Mean ± sd over seeds; every configured contrast as a paired per-image difference with a 95 % interval over seeds and images; answer.md."""
    input:
        metrics=evaluations_of(f"{EVAL}/metrics.json"),
        per_image=evaluations_of(f"{EVAL}/per_image.npz"),
        code=code_inputs("study_tables"),
    output:
        summary_csv=f"{RESULTS}/tables/summary.csv",
        summary_md=f"{RESULTS}/tables/summary.md",
        contrasts_csv=f"{RESULTS}/tables/contrasts.csv",
        contrasts_md=f"{RESULTS}/tables/contrasts.md",
        answer_md=f"{RESULTS}/tables/answer.md",
        answer_html=report(f"{RESULTS}/tables/answer.html", caption="../report/answer.rst", category="Study"),
        forest=report(f"{RESULTS}/tables/contrasts.png", caption="../report/contrasts.rst", category="Study"),
    log:
        f"{RESULTS}/logs/study_tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/study_tables.tsv"
    conda:
        "../envs/geovq.yaml"
    params:
        contrasts=config["contrasts"],
        alpha=0.05,
        report=config["report"],
    script:
        "../workflow_scripts/run_stage.py"

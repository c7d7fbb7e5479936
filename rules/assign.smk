# Test codes under the assignment rules other than a quantizer's own (geovq.assign): the nearest
# code vector for the geodesic codebooks, the decoder's pull-back metric at each test cell over all
# K codes (metric), and the exact decoded-image choice among the metric's best (decode).


rule test_metrics:
    """The pull-back metric of one decoder (the VAE's, or the VQ-VAE's) at every cell of the coded test images."""
    input:
        model=f"{RUN}/{{model}}/model.pt",
        latents_test=f"{RUN}/{{model}}/latents_test.npz",
        code=code_inputs("test_metrics"),
    output:
        metrics=f"{RUN}/{{model}}/metrics_test_{{metric}}.npz",
    log:
        f"{RUN}/logs/test_metrics_{{model}}_{{metric}}.log",
    benchmark:
        f"{RUN}/benchmarks/test_metrics_{{model}}_{{metric}}.tsv"
    wildcard_constraints:
        model="vae|vqvae",
        metric=METRIC_KINDS,
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
    params:
        codebook=lambda wc: {"test_images": dcfg(wc, "codebook")["test_images"]},
        precision=lambda wc: dcfg(wc, "graph")["metric_precision"],
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule assign_codes:
    """One quantizer's test codes under another rule: nearest code vector, its decoder's metric, or decode."""
    input:
        unpack(assign_inputs),
        code=code_inputs("assign_codes"),
    output:
        codes_test=f"{QRUN}/codes_test_{{assign}}.npz",
    log:
        f"{QRUN}/logs/assign_codes_{{assign}}.log",
    benchmark:
        f"{QRUN}/benchmarks/assign_codes_{{assign}}.tsv"
    wildcard_constraints:
        assign="nearest|metric|decode",
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    params:
        assignment=lambda wc: dcfg(wc, "assignment"),
        metric=assign_metric_of,
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

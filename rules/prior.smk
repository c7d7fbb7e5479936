rule train_prior:
    """Autoregressive Transformer prior over one quantizer's training code grids; test NLL in bits."""
    input:
        codes_train=f"{QRUN}/codes_train.npz",
        codes_test=f"{QRUN}/codes_test.npz",
        code=code_inputs("train_prior"),
    output:
        model=f"{QRUN}/prior/model.pt",
        losses=f"{QRUN}/prior/losses.csv",
        nll=f"{QRUN}/prior/nll.json",
    log:
        f"{QRUN}/logs/train_prior.log",
    benchmark:
        f"{QRUN}/benchmarks/train_prior.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
        runtime=30,
    params:
        prior=lambda wc: {k: v for k, v in dcfg(wc, "prior").items() if k != "sample"},
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule sample_prior:
    """Code grids drawn from the prior, decoded through the quantizer's decoder; a PNG grid of the first ones."""
    input:
        prior=f"{QRUN}/prior/model.pt",
        codebook=f"{QRUN}/codebook.npz",
        decoder=decoder_of,
        code=code_inputs("sample_prior"),
    output:
        samples=f"{QRUN}/prior/samples.npz",
        png=f"{QRUN}/prior/samples.png",
    log:
        f"{QRUN}/logs/sample_prior.log",
    benchmark:
        f"{QRUN}/benchmarks/sample_prior.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
        runtime=15,
    params:
        sample=lambda wc: dcfg(wc, "prior")["sample"],
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule sample_quality:
    """Samples and quantized reconstructions of test half A against real half B (FD, KID); class accuracy."""
    input:
        samples=f"{QRUN}/prior/samples.npz",
        nll=f"{QRUN}/prior/nll.json",
        classifier=f"{RESULTS}/{{dataset}}/classifier/model.pt",
        fd_reference=f"{RESULTS}/{{dataset}}/classifier/fd_reference.npz",
        codebook=f"{QRUN}/codebook.npz",
        codes_test=f"{QRUN}/codes_test.npz",
        decoder=decoder_of,
        code=code_inputs("sample_quality"),
    output:
        quality=f"{QRUN}/prior/sample_quality.json",
    log:
        f"{QRUN}/logs/sample_quality.log",
    benchmark:
        f"{QRUN}/benchmarks/sample_quality.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
        runtime=15,
    params:
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

rule train_classifier:
    """A small CNN per dataset; its penultimate features measure generated images (Fréchet distance)."""
    input:
        train=f"{RESULTS}/{{dataset}}/data/train.npz",
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        code=code_inputs("train_classifier"),
    output:
        model=f"{RESULTS}/{{dataset}}/classifier/model.pt",
        metrics=f"{RESULTS}/{{dataset}}/classifier/metrics.json",
        losses=f"{RESULTS}/{{dataset}}/classifier/losses.csv",
    log:
        f"{RESULTS}/logs/{{dataset}}/train_classifier.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/train_classifier.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
        runtime=30,
    params:
        classifier=lambda wc: dcfg(wc, "classifier"),
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule fd_reference:
    """Two disjoint sets of real test images, A and B, their classifier features and the floor: A against B."""
    input:
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        classifier=f"{RESULTS}/{{dataset}}/classifier/model.pt",
        code=code_inputs("fd_reference"),
    output:
        reference=f"{RESULTS}/{{dataset}}/classifier/fd_reference.npz",
    log:
        f"{RESULTS}/logs/{{dataset}}/fd_reference.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/fd_reference.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
        runtime=15,
    params:
        codebook=lambda wc: {"test_images": dcfg(wc, "codebook")["test_images"]},
        sample_n=lambda wc: dcfg(wc, "prior")["sample"]["n"],
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule recon_quality:
    """Reference row: the continuous VAE's reconstructions of test half A against real half B (FD, KID)."""
    input:
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        model=f"{RUN}/vae/model.pt",
        latents_test=f"{RUN}/vae/latents_test.npz",
        classifier=f"{RESULTS}/{{dataset}}/classifier/model.pt",
        fd_reference=f"{RESULTS}/{{dataset}}/classifier/fd_reference.npz",
        code=code_inputs("recon_quality"),
    output:
        quality=f"{RUN}/vae/recon_quality.json",
    log:
        f"{RUN}/logs/recon_quality.log",
    benchmark:
        f"{RUN}/benchmarks/recon_quality.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
        runtime=15,
    params:
        codebook=lambda wc: {"test_images": dcfg(wc, "codebook")["test_images"]},
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

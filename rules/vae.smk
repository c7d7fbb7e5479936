rule train_vae:
    """Train one VAE per dataset x variant x seed; write its latent means for both splits."""
    input:
        train=f"{RESULTS}/{{dataset}}/data/train.npz",
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        code=code_inputs("train_vae"),
    output:
        model=f"{RUN}/vae/model.pt",
        losses=f"{RUN}/vae/losses.csv",
        latents_train=f"{RUN}/vae/latents_train.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
    log:
        f"{RUN}/logs/train_vae.log",
    benchmark:
        f"{RUN}/benchmarks/train_vae.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
        runtime=60,
    params:
        vae=lambda wc: dcfg(wc, "vae")[wc.variant],
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

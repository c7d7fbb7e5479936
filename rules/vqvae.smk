rule train_vqvae:
    """End-to-end VQ-VAE on the VAE variant's encoder/decoder and grid: the learned-codebook baseline."""
    input:
        train=f"{RESULTS}/{{dataset}}/data/train.npz",
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        code=code_inputs("train_vqvae"),
    output:
        model=f"{RUN}/vqvae/model.pt",
        losses=f"{RUN}/vqvae/losses.csv",
        codebook=f"{RUN}/vqvae/codebook.npz",
        codes_train=f"{RUN}/vqvae/codes_train.npz",
        codes_test=f"{RUN}/vqvae/codes_test.npz",
        latents_test=f"{RUN}/vqvae/latents_test.npz",
    log:
        f"{RUN}/logs/train_vqvae.log",
    benchmark:
        f"{RUN}/benchmarks/train_vqvae.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        mem_mb=retry_mem(4000),
        runtime=60,
    params:
        vae=vqvae_arch,
        vqvae=vqvae_training,
        codebook=lambda wc: {k: dcfg(wc, "codebook")[k] for k in ("K", "train_images", "test_images")},
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

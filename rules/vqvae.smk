def decoder_of(wc):
    """Where a quantizer's code vectors become images: the VQ-VAE's own decoder, else the VAE's."""
    return (QRUN + "/model.pt" if wc.quantizer == "vqvae" else RUN + "/vae/model.pt").format(**wc)


def latents_test_of(wc):
    """The continuous test latents a quantizer's codes approximate: the VQ-VAE's z_e, else the VAE's mu."""
    return (QRUN + "/latents_test.npz" if wc.quantizer == "vqvae" else RUN + "/vae/latents_test.npz").format(**wc)


def vqvae_arch(wc):
    """The VAE variant's architecture keys only: the VQ-VAE shares them, not the VAE's training settings."""
    from geovq.train import ARCH_KEYS

    vae = dcfg(wc, "vae")[wc.variant]
    return {k: vae[k] for k in ARCH_KEYS[wc.variant]}


rule train_vqvae:
    """End-to-end VQ-VAE on the VAE variant's encoder/decoder and grid: the learned-codebook baseline."""
    input:
        train=RESULTS + "/{dataset}/data/train.npz",
        test=RESULTS + "/{dataset}/data/test.npz",
        code=lib("stages_generative", "vqvae", "models", "train", "data", "device"),
    output:
        model=RUN + "/vqvae/model.pt",
        losses=RUN + "/vqvae/losses.csv",
        codebook=RUN + "/vqvae/codebook.npz",
        codes_train=RUN + "/vqvae/codes_train.npz",
        codes_test=RUN + "/vqvae/codes_test.npz",
        latents_test=RUN + "/vqvae/latents_test.npz",
    params:
        dataset="{dataset}",
        variant="{variant}",
        seed=lambda wc: int(wc.seed),
        vae=vqvae_arch,
        vqvae=lambda wc: dcfg(wc, "vqvae")[wc.variant],
        codebook=lambda wc: {k: dcfg(wc, "codebook")[k] for k in ("K", "train_images", "test_images")},
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        RUN + "/logs/train_vqvae.log",
    benchmark:
        RUN + "/benchmarks/train_vqvae.tsv"
    script:
        "../workflow_scripts/train_vqvae.py"

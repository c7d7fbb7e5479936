def generative_targets():
    """Sample quality of every prior (with its test NLL) and the continuous-VAE reference rows."""
    runs = dict(dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])
    return expand(QRUN + "/prior/sample_quality.json", quantizer=config["quantizers"], **runs) + expand(
        RUN + "/vae/recon_quality.json", **runs
    )


rule train_prior:
    """Autoregressive Transformer prior over one quantizer's training code grids; test NLL in bits."""
    input:
        codes_train=QRUN + "/codes_train.npz",
        codes_test=QRUN + "/codes_test.npz",
        code=lib("stages_generative", "prior", "train", "data", "device"),
    output:
        model=QRUN + "/prior/model.pt",
        losses=QRUN + "/prior/losses.csv",
        nll=QRUN + "/prior/nll.json",
    params:
        dataset="{dataset}",
        variant="{variant}",
        quantizer="{quantizer}",
        seed=lambda wc: int(wc.seed),
        prior=lambda wc: {k: v for k, v in dcfg(wc, "prior").items() if k != "sample"},
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        QRUN + "/logs/train_prior.log",
    benchmark:
        QRUN + "/benchmarks/train_prior.tsv"
    script:
        "../workflow_scripts/train_prior.py"


rule sample_prior:
    """Code grids drawn from the prior, decoded through the quantizer's decoder; a PNG grid of the first ones."""
    input:
        prior=QRUN + "/prior/model.pt",
        codebook=QRUN + "/codebook.npz",
        decoder=decoder_of,
        code=lib("stages_generative", "prior", "codebook", "vqvae", "train", "models", "device"),
    output:
        samples=QRUN + "/prior/samples.npz",
        png=QRUN + "/prior/samples.png",
    params:
        dataset="{dataset}",
        seed=lambda wc: int(wc.seed),
        sample=lambda wc: dcfg(wc, "prior")["sample"],
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        runtime=15,
    log:
        QRUN + "/logs/sample_prior.log",
    benchmark:
        QRUN + "/benchmarks/sample_prior.tsv"
    script:
        "../workflow_scripts/sample_prior.py"


rule sample_quality:
    """Fréchet distance of samples and of quantized test reconstructions to real test images; class accuracy."""
    input:
        samples=QRUN + "/prior/samples.npz",
        nll=QRUN + "/prior/nll.json",
        test=RESULTS + "/{dataset}/data/test.npz",
        classifier=RESULTS + "/{dataset}/classifier/model.pt",
        codebook=QRUN + "/codebook.npz",
        codes_test=QRUN + "/codes_test.npz",
        decoder=decoder_of,
        code=lib("stages_generative", "classifier", "frechet", "codebook", "vqvae", "train", "models", "data", "device"),
    output:
        quality=QRUN + "/prior/sample_quality.json",
    params:
        dataset="{dataset}",
        variant="{variant}",
        quantizer="{quantizer}",
        seed=lambda wc: int(wc.seed),
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        runtime=15,
    log:
        QRUN + "/logs/sample_quality.log",
    benchmark:
        QRUN + "/benchmarks/sample_quality.tsv"
    script:
        "../workflow_scripts/sample_quality.py"

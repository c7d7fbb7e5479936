rule train_classifier:
    """A small CNN per dataset; its penultimate features measure generated images (Fréchet distance)."""
    input:
        train=RESULTS + "/{dataset}/data/train.npz",
        test=RESULTS + "/{dataset}/data/test.npz",
        code=lib("stages_generative", "classifier", "train", "data", "device"),
    output:
        model=RESULTS + "/{dataset}/classifier/model.pt",
        metrics=RESULTS + "/{dataset}/classifier/metrics.json",
        losses=RESULTS + "/{dataset}/classifier/losses.csv",
    params:
        dataset="{dataset}",
        classifier=lambda wc: dcfg(wc, "classifier"),
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        runtime=30,
    log:
        RESULTS + "/logs/{dataset}/train_classifier.log",
    benchmark:
        RESULTS + "/benchmarks/{dataset}/train_classifier.tsv"
    script:
        "../workflow_scripts/train_classifier.py"


rule recon_quality:
    """Reference row: Fréchet distance of the continuous VAE's test reconstructions (and of real train images)."""
    input:
        train=RESULTS + "/{dataset}/data/train.npz",
        test=RESULTS + "/{dataset}/data/test.npz",
        model=RUN + "/vae/model.pt",
        latents_test=RUN + "/vae/latents_test.npz",
        classifier=RESULTS + "/{dataset}/classifier/model.pt",
        code=lib("stages_generative", "classifier", "frechet", "train", "models", "data", "device"),
    output:
        quality=RUN + "/vae/recon_quality.json",
    params:
        dataset="{dataset}",
        variant="{variant}",
        seed=lambda wc: int(wc.seed),
        codebook=lambda wc: {"test_images": dcfg(wc, "codebook")["test_images"]},
        device=config["device"],
    threads: config["threads"] or workflow.cores
    resources:
        mem_mb=4000,
        runtime=15,
    log:
        RUN + "/logs/recon_quality.log",
    benchmark:
        RUN + "/benchmarks/recon_quality.tsv"
    script:
        "../workflow_scripts/recon_quality.py"

rule kmeans_codebook:
    """Euclidean k-means codebook over latent cells; codes for train and (nearest centroid) test."""
    input:
        latents_train=RUN + "/vae/latents_train.npz",
        latents_test=RUN + "/vae/latents_test.npz",
        code=lib("codebook", "data"),
    output:
        codebook=RUN + "/kmeans/codebook.npz",
        codes_train=RUN + "/kmeans/codes_train.npz",
        codes_test=RUN + "/kmeans/codes_test.npz",
    params:
        seed=lambda wc: int(wc.seed),
        codebook=lambda wc: dcfg(wc, "codebook"),
    threads: config["threads"] or workflow.cores
    log:
        RUN + "/logs/kmeans_codebook.log",
    benchmark:
        RUN + "/benchmarks/kmeans_codebook.tsv"
    script:
        "../workflow_scripts/kmeans_codebook.py"

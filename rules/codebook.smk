rule kmeans_codebook:
    """Euclidean k-means codebook over latent cells; codes for train and (nearest centroid) test."""
    input:
        latents_train=f"{RUN}/vae/latents_train.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
        code=lib("codebook", "data"),
    output:
        codebook=f"{RUN}/kmeans/codebook.npz",
        codes_train=f"{RUN}/kmeans/codes_train.npz",
        codes_test=f"{RUN}/kmeans/codes_test.npz",
    params:
        seed=lambda wc: int(wc.seed),
        codebook=lambda wc: dcfg(wc, "codebook"),
    threads: config["threads"]
    log:
        f"{RUN}/logs/kmeans_codebook.log",
    benchmark:
        f"{RUN}/benchmarks/kmeans_codebook.tsv"
    conda:
        "../envs/geovq.yaml"
    script:
        "../workflow_scripts/kmeans_codebook.py"

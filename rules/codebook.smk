# The train cells every post-hoc quantizer is fitted on, and the Euclidean codebooks.


rule train_cells:
    """One seeded set of train latent cells per run: the data of every post-hoc quantizer (paired fits)."""
    input:
        latents_train=f"{RUN}/vae/latents_train.npz",
        code=code_inputs("train_cells"),
    output:
        cells=f"{RUN}/cells.npz",
    log:
        f"{RUN}/logs/train_cells.log",
    benchmark:
        f"{RUN}/benchmarks/train_cells.tsv"
    conda:
        "../envs/geovq.yaml"
    params:
        fit_cells=lambda wc: dcfg(wc, "codebook")["fit_cells"],
    script:
        "../workflow_scripts/run_stage.py"


rule euclidean_codebook:
    """k-means centroids or Euclidean K-medoids of the shared train cells; train and test codes by nearest code."""
    input:
        cells=f"{RUN}/cells.npz",
        latents_train=f"{RUN}/vae/latents_train.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
        code=code_inputs("euclidean_codebook"),
    output:
        codebook=f"{QRUN}/codebook.npz",
        codes_train=f"{QRUN}/codes_train.npz",
        codes_test=f"{QRUN}/codes_test.npz",
    log:
        f"{QRUN}/logs/euclidean_codebook.log",
    benchmark:
        f"{QRUN}/benchmarks/euclidean_codebook.tsv"
    wildcard_constraints:
        quantizer=EUCLIDEAN,
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    resources:
        mem_mb=retry_mem(4000),
    params:
        codebook=lambda wc: dcfg(wc, "codebook"),
    script:
        "../workflow_scripts/run_stage.py"

# Figures for `snakemake --report` and the original study's analyses as targets.


rule run_figures:
    """Loss curves, paired reconstructions, code usage, decoded codebooks and K-medoids objectives of one VAE."""
    input:
        model=f"{RUN}/vae/model.pt",
        vae_losses=f"{RUN}/vae/losses.csv",
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
        latents_test=f"{RUN}/vae/latents_test.npz",
        prior_losses=per_quantizer(f"{QRUN}/prior/losses.csv"),
        codes_test=per_quantizer(f"{QRUN}/codes_test.npz"),
        codes_train=per_quantizer(f"{QRUN}/codes_train.npz"),
        codebooks=per_quantizer(f"{QRUN}/codebook.npz"),
        decoders=lambda wc: [decoder_of(wc, q) for q in QS],
        objectives=per_quantizer(f"{QRUN}/objective.csv", GEODESIC_QS) if GEODESIC_QS else [],
        code=code_inputs("run_figures"),
    output:
        vae_losses=report(
            f"{FIG}/vae_losses.png",
            caption="../report/vae_losses.rst",
            category="Training",
            labels=labels(figure="VAE loss"),
        ),
        prior_losses=report(
            f"{FIG}/prior_losses.png",
            caption="../report/prior_losses.rst",
            category="Training",
            labels=labels(figure="prior loss"),
        ),
        reconstructions=report(
            f"{FIG}/reconstructions.png",
            caption="../report/reconstructions.rst",
            category="Reconstructions",
            labels=labels(),
        ),
        usage=report(
            f"{FIG}/code_usage.png",
            caption="../report/code_usage.rst",
            category="Codebooks",
            labels=labels(figure="code usage"),
        ),
        objective=report(
            f"{FIG}/kmedoids_objective.png",
            caption="../report/objective.rst",
            category="Codebooks",
            labels=labels(figure="K-medoids objective"),
        ),
        codebooks=[
            report(
                os.path.join(FIG, f"codebook_{q}.png"),
                caption="../report/codebook.rst",
                category="Codebooks",
                labels=labels(figure=f"decoded codebook: {q}"),
            )
            for q in config["quantizers"]
        ],
    log:
        f"{RUN}/logs/run_figures.log",
    benchmark:
        f"{RUN}/benchmarks/run_figures.tsv"
    conda:
        "../envs/geovq.yaml"
    params:
        quantizers=config["quantizers"],
        report=lambda wc: dcfg(wc, "report"),
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"


rule analysis:
    """Codebook comparison in three metrics, K-medoids by init, geodesic vs straight-line paths."""
    input:
        graph=f"{RUN}/graph/knn.npz",
        riemannian=f"{RUN}/graph/lengths_riemannian.npz",
        riemannian_objective=f"{RUN}/riemannian/objective.csv",
        codebooks=per_quantizer(f"{QRUN}/codebook.npz", POSTHOC_QS),
        voronoi=per_quantizer(f"{QRUN}/voronoi.npz", GEODESIC_QS),
        model=f"{RUN}/vae/model.pt",
        latents_train=f"{RUN}/vae/latents_train.npz",
        code=code_inputs("analysis"),
    output:
        comparison=f"{RUN}/analysis/codebook_comparison.csv",
        comparison_png=report(
            f"{RUN}/analysis/codebook_comparison.png",
            caption="../report/comparison.rst",
            category="Analyses",
            labels=labels(figure="codebook comparison"),
        ),
        inits=f"{RUN}/analysis/kmedoids_inits.csv",
        inits_png=report(
            f"{RUN}/analysis/kmedoids_inits.png",
            caption="../report/inits.rst",
            category="Analyses",
            labels=labels(figure="K-medoids by init"),
        ),
        latent_map=report(
            f"{RUN}/analysis/latent_map.png",
            caption="../report/latent_map.rst",
            category="Analyses",
            labels=labels(figure="latent map and geodesic"),
        ),
        interpolation=report(
            f"{RUN}/analysis/interpolation.png",
            caption="../report/interpolation.rst",
            category="Analyses",
            labels=labels(figure="interpolation"),
        ),
    log:
        f"{RUN}/logs/analysis.log",
    benchmark:
        f"{RUN}/benchmarks/analysis.tsv"
    conda:
        "../envs/geovq.yaml"
    threads: config["threads"]
    params:
        quantizers=POSTHOC_QS,
        geodesic=GEODESIC_QS,
        K=lambda wc: dcfg(wc, "codebook")["K"],
        medoids=lambda wc: dcfg(wc, "medoids"),
        analysis=lambda wc: dcfg(wc, "analysis"),
        report=lambda wc: dcfg(wc, "report"),
        device=config["device"],
    script:
        "../workflow_scripts/run_stage.py"

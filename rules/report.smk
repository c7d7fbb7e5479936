# Figures for `snakemake --report` and the original study's analyses as targets.


def per_quantizer(pattern, quantizers=None):
    """One input file per quantizer of this run (in config order)."""
    qs = quantizers or config["quantizers"]
    return lambda wc: [pattern.format(quantizer=q, **wc) for q in qs]


GEODESIC_QS = [q for q in config["quantizers"] if q in ("graph", "riemannian")]
POSTHOC_QS = [q for q in config["quantizers"] if q != "vqvae"]
FIG = RUN + "/figures"


def labels(**extra):
    return {"dataset": "{dataset}", "variant": "{variant}", "seed": "{seed}", **extra}


rule run_figures:
    """Loss curves, paired reconstructions, code usage, decoded codebooks and K-medoids objectives of one VAE."""
    input:
        model=RUN + "/vae/model.pt",
        vae_losses=RUN + "/vae/losses.csv",
        test=RESULTS + "/{dataset}/data/test.npz",
        latents_test=RUN + "/vae/latents_test.npz",
        prior_losses=per_quantizer(QRUN + "/prior/losses.csv"),
        codes_test=per_quantizer(QRUN + "/codes_test.npz"),
        codes_train=per_quantizer(QRUN + "/codes_train.npz"),
        codebooks=per_quantizer(QRUN + "/codebook.npz"),
        decoders=lambda wc: [
            (QRUN + "/model.pt" if q == "vqvae" else RUN + "/vae/model.pt").format(quantizer=q, **wc)
            for q in config["quantizers"]
        ],
        objectives=per_quantizer(QRUN + "/objective.csv", GEODESIC_QS) if GEODESIC_QS else [],
        code=lib("stages_report", "plots", "train", "vqvae", "codebook", "models", "data"),
    output:
        vae_losses=report(FIG + "/vae_losses.png", caption="../report/vae_losses.rst", category="Training",
                          labels=labels(figure="VAE loss")),
        prior_losses=report(FIG + "/prior_losses.png", caption="../report/prior_losses.rst", category="Training",
                            labels=labels(figure="prior loss")),
        reconstructions=report(FIG + "/reconstructions.png", caption="../report/reconstructions.rst",
                               category="Reconstructions", labels=labels()),
        usage=report(FIG + "/code_usage.png", caption="../report/code_usage.rst", category="Codebooks",
                     labels=labels(figure="code usage")),
        objective=report(FIG + "/kmedoids_objective.png", caption="../report/objective.rst", category="Codebooks",
                         labels=labels(figure="K-medoids objective")),
        codebooks=[report(FIG + f"/codebook_{q}.png", caption="../report/codebook.rst", category="Codebooks",
                          labels=labels(figure=f"decoded codebook: {q}")) for q in config["quantizers"]],
    params:
        dataset="{dataset}",
        variant="{variant}",
        quantizers=config["quantizers"],
        report=lambda wc: dcfg(wc, "report"),
        device=config["device"],
    log:
        RUN + "/logs/run_figures.log",
    benchmark:
        RUN + "/benchmarks/run_figures.tsv"
    script:
        "../workflow_scripts/run_figures.py"


rule analysis:
    """Codebook comparison in three metrics, K-medoids vs K and init, geodesic vs straight-line paths."""
    input:
        graph=RUN + "/graph/knn.npz",
        riemannian=RUN + "/graph/lengths_riemannian.npz",
        codebooks=per_quantizer(QRUN + "/codebook.npz", POSTHOC_QS),
        voronoi=per_quantizer(QRUN + "/voronoi.npz", GEODESIC_QS),
        model=RUN + "/vae/model.pt",
        latents_train=RUN + "/vae/latents_train.npz",
        code=lib("stages_report", "plots", "geodesic", "codebook", "metrics", "train", "models"),
    output:
        comparison=RUN + "/analysis/codebook_comparison.csv",
        comparison_png=report(RUN + "/analysis/codebook_comparison.png", caption="../report/comparison.rst",
                              category="Analyses", labels=labels(figure="codebook comparison")),
        sweep=RUN + "/analysis/kmedoids_sweep.csv",
        sweep_png=report(RUN + "/analysis/kmedoids_sweep.png", caption="../report/sweep.rst",
                         category="Analyses", labels=labels(figure="K-medoids vs K and init")),
        latent_map=report(RUN + "/analysis/latent_map.png", caption="../report/latent_map.rst",
                          category="Analyses", labels=labels(figure="latent map and geodesic")),
        interpolation=report(RUN + "/analysis/interpolation.png", caption="../report/interpolation.rst",
                             category="Analyses", labels=labels(figure="interpolation")),
    params:
        dataset="{dataset}",
        variant="{variant}",
        seed=lambda wc: int(wc.seed),
        quantizers=POSTHOC_QS,
        geodesic=GEODESIC_QS,
        K=lambda wc: dcfg(wc, "codebook")["K"],
        medoids=lambda wc: dcfg(wc, "medoids"),
        analysis=lambda wc: dcfg(wc, "analysis"),
        report=lambda wc: dcfg(wc, "report"),
        device=config["device"],
    threads: config["threads"] or workflow.cores
    log:
        RUN + "/logs/analysis.log",
    benchmark:
        RUN + "/benchmarks/analysis.tsv"
    script:
        "../workflow_scripts/analysis.py"


def report_targets():
    runs = dict(dataset=config["datasets"], variant=config["variants"], seed=config["seeds"])
    targets = expand(FIG + "/reconstructions.png", **runs)
    if "riemannian" in config["quantizers"] and "graph" in config["quantizers"]:
        targets += expand(RUN + "/analysis/latent_map.png", **runs)
    return targets

"""The stage each rule runs: rule name -> "module:function" (workflow_scripts/run_stage.py).

A plain literal, imports nothing: geovq.codedeps reads it with ast when Snakemake builds the DAG
(each rule's code inputs start from its entry here), and a job imports only its own module.
"""

STAGES = {
    # rules/data.smk
    "prepare_data": "geovq.stages.data:prepare_data",
    # rules/vae.smk
    "train_vae": "geovq.stages.vae:train_vae",
    # rules/codebook.smk
    "train_cells": "geovq.stages.codebook:train_cells",
    "euclidean_codebook": "geovq.stages.codebook:euclidean_codebook",
    # rules/geodesic.smk
    "knn_graph": "geovq.stages.geodesic:knn_graph",
    "riemannian_lengths": "geovq.stages.geodesic:riemannian_lengths",
    "geodesic_medoids": "geovq.stages.geodesic:geodesic_medoids",
    "geodesic_codes": "geovq.stages.geodesic:geodesic_codes",
    # rules/assign.smk
    "test_metrics": "geovq.stages.assign:test_metrics",
    "assign_codes": "geovq.stages.assign:assign_codes",
    # rules/vqvae.smk
    "train_vqvae": "geovq.stages.vqvae:train_vqvae",
    # rules/classifier.smk
    "train_classifier": "geovq.stages.classifier:train_classifier",
    "fd_reference": "geovq.stages.classifier:fd_reference",
    "recon_quality": "geovq.stages.classifier:recon_quality",
    # rules/prior.smk
    "train_prior": "geovq.stages.prior:train_prior",
    "sample_prior": "geovq.stages.prior:sample_prior",
    "sample_quality": "geovq.stages.prior:sample_quality",
    # rules/evaluate.smk
    "evaluate": "geovq.stages.evaluate:evaluate",
    "metrics_table": "geovq.stages.evaluate:metrics_table",
    # rules/report.smk
    "run_figures": "geovq.stages.report:run_figures",
    "analysis": "geovq.stages.report:analysis",
    # rules/geometry.smk
    "geometry": "geovq.stages.geometry:geometry",
    # rules/ratedistortion.smk
    "rate_distortion": "geovq.stages.ratedistortion:rate_distortion",
    "rate_distortion_table": "geovq.stages.ratedistortion:rate_distortion_table",
    "rate_distortion_figure": "geovq.stages.ratedistortion:rate_distortion_figure",
    # rules/study.smk
    "study_tables": "geovq.stages.study:study_tables",
}

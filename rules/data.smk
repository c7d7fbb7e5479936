rule prepare_data:
    """Read a dataset from its standard files, your own images (config image_datasets) or draw the synthetic
    one, into one file per split."""
    input:
        images=image_files,
        code=code_inputs("prepare_data"),
    output:
        train=f"{RESULTS}/{{dataset}}/data/train.npz",
        test=f"{RESULTS}/{{dataset}}/data/test.npz",
    log:
        f"{RESULTS}/logs/{{dataset}}/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/prepare_data.tsv"
    conda:
        "../envs/geovq.yaml"
    params:
        options=lambda wc: dcfg(wc, "dataset_options"),
        data_dir=config["data_dir"],
        download=config["download"],
        image_dataset=image_dataset_of,
    script:
        "../workflow_scripts/run_stage.py"

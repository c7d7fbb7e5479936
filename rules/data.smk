rule prepare_data:
    """Read a dataset from its standard files (or draw the synthetic one) into one file per split."""
    input:
        code=lib("data"),
    output:
        train=RESULTS + "/{dataset}/data/train.npz",
        test=RESULTS + "/{dataset}/data/test.npz",
    params:
        dataset="{dataset}",
        options=lambda wc: dcfg(wc, "dataset_options"),
        data_dir=config["data_dir"],
        download=config["download"],
    log:
        RESULTS + "/logs/{dataset}/prepare_data.log",
    benchmark:
        RESULTS + "/benchmarks/{dataset}/prepare_data.tsv"
    script:
        "../workflow_scripts/prepare_data.py"

# geovq: does post-hoc geodesic quantization of a VAE's latent space beat Euclidean codebooks
# and an end-to-end VQ-VAE? See README.md; one rules/<stage>.smk per stage.
from snakemake.utils import min_version

min_version("9.0")


# The default config only when none is given: `--configfile x.yaml` then stands alone
# instead of being merged over the defaults of config/config.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(config["variants"]),
    quantizer="|".join(config["quantizers"]),
    seed=r"\d+",
    split="train|test",
    assign="|".join(Q.ASSIGNS),


include: "rules/data.smk"
include: "rules/vae.smk"
include: "rules/codebook.smk"
include: "rules/geodesic.smk"
include: "rules/vqvae.smk"
include: "rules/assign.smk"
include: "rules/classifier.smk"
include: "rules/prior.smk"
include: "rules/evaluate.smk"
include: "rules/study.smk"
include: "rules/report.smk"
include: "rules/geometry.smk"
include: "rules/ratedistortion.smk"


rule all:
    default_target: True
    input:
        final_targets(),

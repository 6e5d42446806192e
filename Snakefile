# Bigram subnetworks (Chang & Bergen, NeurIPS 2025), end to end:
# corpus → tokenizer → tokens → bigram counts → models → masks → metrics, overlap, ablation →
# tables → figures.
# Outputs land under results/ (see README for the layout); logs under logs/.
from snakemake.utils import min_version

min_version("9.12")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        rules.tables_all.input,
        rules.figures_all.input,

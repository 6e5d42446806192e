# Bigram subnetworks (Chang & Bergen, NeurIPS 2025), end to end:
# corpus → tokenizer → tokens → bigram counts → models → masks → metrics, overlap, ablation →
# tables → figures.
# Outputs land under results/ (see README for the layout); logs under logs/.
import os
import sys

from snakemake.utils import min_version

min_version("9.12")
# The library comes from this checkout, for Snakemake itself and for every job (local, SLURM, or
# a `--sdm conda` environment, which holds only the library's dependencies).
LIBRARY = os.path.join(workflow.basedir, "src")
sys.path.insert(0, LIBRARY)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [LIBRARY, os.environ.get("PYTHONPATH")])))


# The default config, found beside this file whatever the working directory (--directory); any
# --configfile is merged over it (mappings key by key, lists replaced whole).
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


# Downloads run where Snakemake runs (the head node of a cluster, which has the network); the
# corpus rule streams a hub dataset when the config asks for one.
localrules:
    corpus,
    downloads,
    download_model,
    download_released_mask,
    download_tokenizer,
    fetch_english,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/overlap.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/residual_stream.smk"
include: "workflow/rules/released.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        rules.tables_all.input,
        rules.figures_all.input,

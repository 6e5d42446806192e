"""Figure 1: bigram-surprisal correlation vs subnetwork size."""

import pandas as pd

from bigram_subnetworks import logs, plots

logs.setup(snakemake.log[0])
metrics = pd.read_csv(snakemake.input.metrics, sep="\t", dtype={"lam": str})
plots.save_figure(plots.r_vs_size(metrics), snakemake.output.png, snakemake.output.pdf)

"""Kept weights per layer and block of the final-checkpoint bigram subnetworks."""

import pandas as pd

from bigram_subnetworks import logs, plots

logs.setup(snakemake.log[0])
layers = pd.read_csv(snakemake.input.layers, sep="\t", dtype={"lam": str})
plots.save_figure(plots.kept_by_layer(layers), snakemake.output.png, snakemake.output.pdf)

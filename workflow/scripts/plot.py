"""Render one figure from its tidy table: `plots.<figure>(table)` → PNG and PDF."""

import pandas as pd

from bigram_subnetworks import logs, plots

logs.setup(snakemake.log[0])
table = pd.read_csv(snakemake.input.table, sep="\t", dtype={"lam": str})
figure = getattr(plots, snakemake.wildcards.figure)(table)
plots.save_figure(figure, snakemake.output.png, snakemake.output.pdf)

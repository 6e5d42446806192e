"""Pretraining curves of the in-pipeline models against bigram and unigram baselines."""

import pandas as pd

from bigram_subnetworks import logs, plots

logs.setup(snakemake.log[0])
table = pd.read_csv(snakemake.input.table, sep="\t")
plots.save_figure(plots.pretraining(table), snakemake.output.png, snakemake.output.pdf)

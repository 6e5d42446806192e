"""Gather the residual-stream analyses into tidy tables (per seed, and mean with 95% CI across
seeds for the per-layer lens metrics)."""

from functools import partial

import pandas as pd

from bigram_subnetworks import evaluation, io, logs

logs.setup(snakemake.log[0])
archs = snakemake.params.archs
read = partial(pd.read_csv, sep="\t", dtype={"lam": str})
lens = evaluation.tidy(pd.concat(map(read, snakemake.input.lens)), archs)
keys = ["model", "arch", "revision", "step", "lam", "condition", "layer"]
values = [c for c in lens.select_dtypes("number").columns if c not in [*keys, "seed"]]
summary = evaluation.summarize_seeds(lens, keys, values)
covariance = evaluation.tidy(pd.concat(map(read, snakemake.input.covariance)), archs)
io.write_table(lens, snakemake.output.lens)
io.write_table(summary, snakemake.output.summary)
io.write_table(covariance, snakemake.output.covariance)

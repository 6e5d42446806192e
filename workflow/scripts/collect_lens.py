"""Gather the residual-stream analyses into tidy tables (per seed, and mean with 95% CI across
seeds for the per-layer lens metrics)."""

import pandas as pd

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
archs, revisions = snakemake.params.archs, snakemake.params.revisions
read = io.read_table
lens = tables.tidy(pd.concat(map(read, snakemake.input.lens)), archs, revisions=revisions)
keys = ["model", "arch", "revision", "checkpoint", "step", "lam", "condition", "layer"]
values = [c for c in lens.select_dtypes("number").columns if c not in [*keys, "seed"]]
summary = tables.summarize_seeds(lens, keys, values)
covariance = tables.tidy(
    pd.concat(map(read, snakemake.input.covariance)), archs, revisions=revisions
)
io.write_table(lens, snakemake.output.lens)
io.write_table(summary, snakemake.output.summary)
io.write_table(covariance, snakemake.output.covariance)

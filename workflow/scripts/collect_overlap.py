"""Gather the overlaps into tidy tables: one row per pair, pair kind (the configured
bigram-optimal pair and its bigram-magnitude control) and seed, their mean and 95% CI across
seeds, and the per-layer, per-block breakdown."""

import pandas as pd

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
archs, revisions = snakemake.params.archs, snakemake.params.revisions
labels = {"bigram_lam": str, "optimal_lam": str}
rows = [row for path in snakemake.input.summaries for row in io.read_json(path)["pairs"]]
overlap = tables.tidy(pd.DataFrame(rows).astype(labels), archs, ["pair"], revisions)
keys = ["model", "arch", "revision", "checkpoint", "step", "bigram_lam", "optimal_lam", "pair"]
keys.append("null_model")
values = [c for c in overlap.select_dtypes("number").columns if c not in [*keys, "seed"]]
summary = tables.summarize_seeds(overlap, keys, values)
blocks = [io.read_table(path) for path in snakemake.input.blocks]
blocks = tables.tidy(pd.concat(blocks, ignore_index=True), archs, ["pair"], revisions)
io.write_table(overlap, snakemake.output.overlap)
io.write_table(summary, snakemake.output.summary)
io.write_table(blocks, snakemake.output.blocks)

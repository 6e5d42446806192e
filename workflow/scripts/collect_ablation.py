"""Gather the ablations into tidy tables (per seed, and mean with 95% CI across seeds), the
dose-responses of random removal (per seed: their sizes follow each seed's mask) and the
generated texts."""

from functools import partial

import pandas as pd

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
archs, revisions = snakemake.params.archs, snakemake.params.revisions
read = partial(io.read_table, keep_default_na=False)  # generated text may read "NA"
ablation = tables.tidy(pd.concat(map(read, snakemake.input.ablations)), archs, revisions=revisions)
keys = ["model", "arch", "revision", "checkpoint", "step", "target", "lam", "condition"]
values = ["n_kept", "mean_surprisal_bits", "std_surprisal_bits"]
summary = tables.summarize_seeds(ablation, keys, values)
doses = pd.concat(map(read, snakemake.input.dose_responses))
doses = tables.tidy(doses, archs, order=["removal", "n_removed"], revisions=revisions)
texts = tables.tidy(pd.concat(map(read, snakemake.input.generations)), archs, revisions=revisions)
io.write_table(ablation, snakemake.output.ablation)
io.write_table(summary, snakemake.output.summary)
io.write_table(doses, snakemake.output.dose_response)
io.write_table(texts, snakemake.output.generations)

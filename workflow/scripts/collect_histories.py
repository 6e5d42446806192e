"""Gather every mask's training history (one row per attempt × step) into one tidy table, the
training-curves figure's."""

import pandas as pd

from bigram_subnetworks import io, logs, tables

logs.setup(snakemake.log[0])
keys = ("model", "revision", "target", "lam", "lam_value", "seed")
metas = [io.read_json(path) for path in snakemake.input.metas]
identities = [{**{key: meta[key] for key in keys}, "seed": int(meta["seed"])} for meta in metas]
histories = [pd.read_csv(path, sep="\t") for path in snakemake.input.histories]
curves = tables.training_curves(histories, identities)
params = snakemake.params
curves = tables.tidy(curves, params.archs, revisions=params.revisions)
io.write_table(curves, snakemake.output.table)

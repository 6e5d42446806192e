"""Gather every mask's training history (one row per attempt × step) into one tidy table, the
training-curves figure's."""

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
keys = ("model", "revision", "target", "lam", "lam_value", "seed")
metas = [io.read_json(path) for path in snakemake.input.metas]
identities = [{**{key: meta[key] for key in keys}, "seed": int(meta["seed"])} for meta in metas]
histories = [io.read_table(path) for path in snakemake.input.histories]
curves = tables.training_curves(histories, identities)
params = snakemake.params
curves = tables.tidy(curves, params.archs, revisions=params.revisions)
io.write_table(curves, snakemake.output.table)

"""Gather every mask's metrics and kept-per-block counts into two tidy tables."""

import pandas as pd

from bigram_subnetworks import evaluation, io, logs

logs.setup(snakemake.log[0])
metrics = [io.read_json(path) for path in snakemake.input.metrics]
layers = [pd.read_csv(path, sep="\t", dtype={"lam": str}) for path in snakemake.input.layers]
metrics_table, layers_table = evaluation.collect_tables(metrics, layers, snakemake.params.archs)
io.write_table(metrics_table, snakemake.output.metrics)
io.write_table(layers_table, snakemake.output.layers)

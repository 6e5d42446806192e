"""Training dynamics: bigram subnetworks' r, size and first-MLP share at every checkpoint."""

import pandas as pd

from bigram_subnetworks import io, logs, tables

logs.setup(snakemake.log[0])
metrics = pd.read_csv(snakemake.input.metrics, sep="\t", dtype={"lam": str})
layers = pd.read_csv(snakemake.input.layers, sep="\t", dtype={"lam": str})
table = tables.dynamics(metrics, layers, snakemake.params.lambdas)
io.write_table(table, snakemake.output.table)

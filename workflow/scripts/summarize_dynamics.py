"""Training dynamics: bigram subnetworks' r, size and first-MLP share at every checkpoint."""

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
metrics = io.read_table(snakemake.input.metrics)
layers = io.read_table(snakemake.input.layers)
table = tables.dynamics(metrics, layers, snakemake.params.lambdas)
io.write_table(table, snakemake.output.table)

"""Gather every mask's metrics and kept-per-block counts into tidy tables, with the mean and
95% confidence interval of every metric across seeds, and every bigram r beside the references
it is read against (its tokenizer's table's, the full and the context-free model's)."""

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
metrics = [io.read_json(path) for path in snakemake.input.metrics]
layers = [io.read_table(path) for path in snakemake.input.layers]
found = [io.read_json(path) for path in snakemake.input.references]
references = {entry["tokenizer"]: entry["correlations"] for entry in found}
context_free = [io.read_json(path) for path in snakemake.input.context_free]
params = snakemake.params
outputs = tables.collect_tables(
    metrics, layers, params.archs, params.revisions, references, context_free, params.tokenizers
)
for table, path in zip(outputs, snakemake.output, strict=True):
    io.write_table(table, path)

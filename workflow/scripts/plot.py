"""Render one figure from its tidy table: `plots.<figure>(table)` → PNG and PDF."""

from bigram_subnetworks import io, logs, plots

logs.start(snakemake, threads=False)
table = io.read_table(snakemake.input.table)
figure = getattr(plots, snakemake.wildcards.figure)(table)
plots.save_figure(figure, snakemake.output.png, snakemake.output.pdf)

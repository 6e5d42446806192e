"""Gather the parity rows (ours vs the authors' released masks) into one tidy table."""

import pandas as pd

from bigram_subnetworks import io, logs, tables

logs.start(snakemake, threads=False)
rows = pd.DataFrame(map(io.read_json, snakemake.input.parity)).astype({"lam": str})
params = snakemake.params
io.write_table(tables.tidy(rows, params.archs, revisions=params.revisions), snakemake.output.parity)

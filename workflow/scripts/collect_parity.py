"""Gather the parity rows (ours vs the authors' released masks) into one tidy table."""

import pandas as pd

from bigram_subnetworks import evaluation, io, logs

logs.setup(snakemake.log[0])
rows = pd.DataFrame(map(io.read_json, snakemake.input.parity)).astype({"lam": str})
params = snakemake.params
io.write_table(
    evaluation.tidy(rows, params.archs, revisions=params.revisions), snakemake.output.parity
)

"""Overlap of a bigram and an optimal subnetwork, with its permutation null and the per-layer,
per-block breakdown."""

from bigram_subnetworks import architectures, io, logs, overlap
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
w = snakemake.wildcards
settings = snakemake.params.overlap
bigram, optimal = Mask.load(snakemake.input.bigram), Mask.load(snakemake.input.optimal)
blocks = architectures.checkpoint_unit_blocks(snakemake.params.model_dir, bigram.shapes)
nulls = {k: settings[k] for k in ("null_model", "permutations")}
summary = overlap.overlap_summary(
    bigram, optimal, blocks, **nulls, seed=settings["seed"], threads=snakemake.threads
)
breakdown = overlap.overlap_breakdown(bigram, optimal, blocks, null_model=settings["null_model"])
identity = {**w, "seed": int(w.seed)}
io.write_json({**identity, **summary}, snakemake.output.summary)
io.write_table(breakdown.assign(**identity), snakemake.output.blocks)

"""Overlap of a bigram and an optimal subnetwork, with its permutation null and the per-layer,
per-block breakdown."""

from bigram_subnetworks import architectures, io, logs, overlap
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
w = snakemake.wildcards
null = snakemake.params.null
bigram, optimal = Mask.load(snakemake.input.bigram), Mask.load(snakemake.input.optimal)
blocks = architectures.checkpoint_unit_blocks(snakemake.params.model_dir, bigram.shapes)
summary = overlap.overlap_summary(bigram, optimal, blocks, **null, threads=snakemake.threads)
breakdown = overlap.overlap_breakdown(bigram, optimal, blocks, null_model=null["null_model"])
identity = {**w, "seed": int(w.seed)}
io.write_json({**identity, **summary}, snakemake.output.summary)
io.write_table(breakdown.assign(**identity), snakemake.output.blocks)

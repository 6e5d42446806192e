"""Overlap of a bigram and an optimal subnetwork, and of the bigram subnetwork and the
magnitude mask of the optimal one's size (the control), each with its permutation null and the
per-layer, per-block breakdown."""

from bigram_subnetworks import architectures, io, jobs, logs, overlap
from bigram_subnetworks.masking import Mask

logs.start(snakemake, threads=False)  # the null's threads are its own (`threads=`)
model_dir = snakemake.params.model_dir
bigram, optimal = Mask.load(snakemake.input.bigram), Mask.load(snakemake.input.optimal)
weights = architectures.maskable_parameters(io.load_model(model_dir, device="cpu"))
control = overlap.magnitude_mask(weights, optimal)
del weights
blocks = architectures.checkpoint_unit_blocks(model_dir, bigram.shapes)
summaries, breakdown = overlap.overlap_with_control(
    bigram, optimal, control, blocks, **snakemake.params.null, threads=snakemake.threads
)
identity = {**snakemake.wildcards, "seed": int(snakemake.wildcards.seed)}
io.write_json({"pairs": [{**identity, **s} for s in summaries]}, snakemake.output.summary)
io.write_table(breakdown.assign(**identity), snakemake.output.blocks)
jobs.write_provenance(snakemake, snakemake.output.meta)

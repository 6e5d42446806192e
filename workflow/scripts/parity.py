"""Our bigram subnetwork against the authors' released one: sizes, first-MLP shares, overlap."""

from bigram_subnetworks import architectures, io, logs, parity
from bigram_subnetworks.masking import Mask

logs.start(snakemake, threads=False)
ours, theirs = Mask.load(snakemake.input.ours), Mask.load(snakemake.input.theirs)
blocks = architectures.checkpoint_unit_blocks(snakemake.params.model_dir, ours.shapes)
row = parity.parity_row(ours, theirs, blocks, **snakemake.params.null, threads=snakemake.threads)
identity = {**snakemake.wildcards, **snakemake.params.identity, **snakemake.params.source}
io.write_json({**identity, **row}, snakemake.output.parity)

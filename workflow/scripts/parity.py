"""Our bigram subnetwork against the authors' released one: sizes, first-MLP shares, overlap."""

from transformers import AutoConfig

from bigram_subnetworks import architectures, io, logs, parity
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
settings = snakemake.params.overlap
config = AutoConfig.from_pretrained(
    snakemake.params.model_dir, local_files_only=True, trust_remote_code=False
)
ours, theirs = Mask.load(snakemake.input.ours), Mask.load(snakemake.input.theirs)
spec = architectures.spec_for_config(config)
blocks = architectures.unit_blocks_for_shapes(spec, ours.shapes, architectures.num_heads(config))
row = parity.parity_row(
    ours,
    theirs,
    blocks,
    null_model=settings["null_model"],
    permutations=settings["permutations"],
    seed=settings["seed"],
    threads=snakemake.threads,
)
identity = {**snakemake.wildcards, **snakemake.params.identity, **snakemake.params.source}
io.write_json({**identity, **row}, snakemake.output.parity)

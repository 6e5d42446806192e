"""Evaluate one mask on the eval split: bigram r, cross-entropy, size, kept weights per block."""

import torch

from bigram_subnetworks import corpus, evaluation, io, logs
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
settings = snakemake.params.evaluation
bigrams = BigramModel(BigramCounts.load(snakemake.input.bigrams))
tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=bigrams.vocab_size)
tokens = tokens[: settings["max_sequences"]]
model = io.load_checkpoint(snakemake.input.checkpoints, w.revision)
mask = Mask.load(snakemake.input.mask)
mask.check_matches(model, source=snakemake.input.mask)
metrics = evaluation.evaluate_mask(model, mask, tokens, bigrams, settings["batch_size"])
layers = evaluation.kept_by_block(model, mask)
identity = {**w, "lam_value": snakemake.params.lam_value}
io.write_json({**identity, **metrics, "eval_sequences": len(tokens)}, snakemake.output.metrics)
io.write_table(layers.assign(**identity), snakemake.output.layers)

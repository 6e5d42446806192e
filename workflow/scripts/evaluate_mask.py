"""Evaluate one mask on the eval split: bigram r, cross-entropy, size, kept weights per block;
for optimal subnetworks also their fidelity to the full model."""

import torch

from bigram_subnetworks import corpus, evaluation, io, logs, training
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = snakemake.params.evaluation
bigrams = BigramModel(BigramCounts.load(snakemake.input.bigrams))
tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=bigrams.vocab_size)
tokens = tokens[: settings["max_sequences"]]
model = io.load_model(snakemake.params.model_dir)
io.check_vocab_fits(bigrams.vocab_size, model, source=snakemake.input.bigrams)
mask = Mask.load(snakemake.input.mask)
mask.check_matches(model, source=snakemake.input.mask)
metrics = evaluation.evaluate_mask(
    model, mask, tokens, bigrams, settings["batch_size"], fidelity=snakemake.params.fidelity
)
layers = evaluation.kept_by_block(model, mask)
meta = io.read_json(snakemake.input.meta)
identity = {**snakemake.wildcards, "seed": int(snakemake.wildcards.seed)}
identity["lam_value"] = meta["lam_value"]  # size-matched λ is found in training, not configured
how_trained = {key: meta[key] for key in training.CONVERGENCE_KEYS}
metrics = {**identity, **metrics, **how_trained, "eval_sequences": len(tokens)}
io.write_json(metrics, snakemake.output.metrics)
io.write_table(layers.assign(**identity), snakemake.output.layers)

"""Ablation of one subnetwork: eval surprisal and generated text for the five conditions, and
the dose-response of random removal."""

import torch

from bigram_subnetworks import ablation, corpus, io, logs, tokenizer
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
evaluation_settings = snakemake.params.evaluation
vocab_size = BigramModel(BigramCounts.load(snakemake.input.bigrams)).vocab_size
tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=vocab_size)
tokens = tokens[: evaluation_settings["max_sequences"]][: snakemake.params.eval_sequences]
batch_size = evaluation_settings["batch_size"]
checkpoint = snakemake.params.model_dir
model = io.load_model(checkpoint)
io.check_vocab_fits(vocab_size, model, source=snakemake.input.bigrams)
mask = Mask.load(snakemake.input.mask)
mask.check_matches(model, source=snakemake.input.mask)
seed = snakemake.params.control_seed
table = ablation.ablation(model, mask, tokens, vocab_size, batch_size, seed)
doses = ablation.dose_response(
    model, mask, tokens, vocab_size, batch_size, seed, conditions=table,
    **snakemake.params.dose_response,
)  # fmt: skip
texts = ablation.generations(
    model, tokenizer.load_tokenizer(checkpoint), mask, seed, **snakemake.params.generation
)
identity = {**w, "seed": int(w.seed)}
io.write_table(table.assign(**identity), snakemake.output.ablation)
io.write_table(doses.assign(**identity), snakemake.output.dose_response)
io.write_table(texts.assign(**identity), snakemake.output.generations)

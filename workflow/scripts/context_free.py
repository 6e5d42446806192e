"""The bigram r of one model checkpoint fed the current token alone (a 1-token sequence, after
the BOS token where the tokens use one), on the eval split: the model's own bigram map."""

import torch

from bigram_subnetworks import corpus, evaluation, io, logs
from bigram_subnetworks.bigrams import BigramCounts, BigramModel

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = snakemake.params.evaluation
bigrams = BigramModel(BigramCounts.load(snakemake.input.bigrams))
tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=bigrams.vocab_size)
tokens = tokens[: settings["max_sequences"]]
bos = io.read_json(snakemake.input.meta).get("bos_token_id")  # None: documents open without one
model = io.load_model(snakemake.params.model_dir)
io.check_vocab_fits(bigrams.vocab_size, model, source=snakemake.input.bigrams)
# As many 1-token sequences per forward pass as an eval batch has tokens.
batch = settings["batch_size"] * tokens.shape[1]
metrics = evaluation.context_free_correlations(model, tokens, bigrams, batch, bos)
identity = {**snakemake.wildcards, "bos_token_id": bos, "eval_sequences": len(tokens)}
io.write_json({**identity, **metrics}, snakemake.output.metrics)

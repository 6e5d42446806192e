"""Residual-stream analyses of one bigram subnetwork: per-layer lenses and covariance similarity
for the full model, the subnetwork, its complement and a random same-count subnetwork."""

import torch

from bigram_subnetworks import corpus, io, lens, logs
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
settings = snakemake.params.settings
vocab_size = BigramModel(BigramCounts.load(snakemake.input.bigrams)).vocab_size
fit = corpus.load_tokens(snakemake.input.fit, vocab_size)  # held out from mask training
held_out = corpus.load_tokens(snakemake.input.eval, vocab_size)[: settings["eval_sequences"]]
model = io.load_model(snakemake.params.model_dir)
io.check_vocab_fits(vocab_size, model, source=snakemake.input.bigrams)
mask = Mask.load(snakemake.input.mask)
mask.check_matches(model, source=snakemake.input.mask)
seed = snakemake.params.control_seed
lens_table, covariance = lens.analyze_conditions(
    model, mask, fit, held_out, vocab_size, settings["batch_size"], seed,
    alpha=settings["ridge_alpha"], max_tokens=settings["max_tokens"],
)  # fmt: skip
identity = {**w, "seed": int(w.seed)}
io.write_table(lens_table.assign(**identity), snakemake.output.lens)
io.write_table(covariance.assign(**identity), snakemake.output.covariance)

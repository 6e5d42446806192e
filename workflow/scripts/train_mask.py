"""Train one subnetwork (or write a sentinel mask) for a model checkpoint, target, λ and seed."""

import torch

from bigram_subnetworks import corpus, io, logs, targets, training
from bigram_subnetworks.bigrams import BigramCounts, BigramModel

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
cfg = training.MaskTrainingConfig(**snakemake.params.training)
bigrams = BigramModel(BigramCounts.load(snakemake.input.bigrams))
tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=bigrams.vocab_size)
model = io.load_model(snakemake.params.model_dir)
io.check_vocab_fits(bigrams.vocab_size, model, source=snakemake.input.bigrams)
target = targets.make_target(w.target, model, bigrams, cfg.precision)
every = snakemake.config["resume"]["mask_every"]
resume = training.resume_for(snakemake.params.resume_dir, every, cfg)
result = training.fit_mask(model, target, tokens, cfg, label=w.lam, resume=resume)
meta = io.provenance(
    rule="train_mask",
    **w,
    lam_value=cfg.lam,
    training=snakemake.params.training,
    **result.summary(),
    n_kept=result.mask.n_kept,
    n_total=result.mask.n_total,
)
result.mask.save(snakemake.output.mask, meta=meta)
io.write_table(result.history, snakemake.output.history)
io.write_json(meta, snakemake.output.meta)

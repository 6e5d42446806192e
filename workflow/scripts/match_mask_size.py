"""Train the optimal subnetwork whose size matches a bigram subnetwork's, searching λ from the
sizes of the configured optimal subnetworks (one already matched in size is reused)."""

import functools

import torch

from bigram_subnetworks import corpus, io, logs, targets, training
from bigram_subnetworks.bigrams import BigramCounts, BigramModel

logs.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
w = snakemake.wildcards
matching = snakemake.params.matching
goal = io.read_json(snakemake.input.bigram_meta)["n_kept"]
metas = [io.read_json(path) for path in snakemake.input.optimal_metas]
files = zip(metas, snakemake.input.optimal_masks, snakemake.input.optimal_histories, strict=True)
optimal = {meta["lam_value"]: (mask, history, meta) for meta, mask, history in files}
known = [(meta["lam_value"], meta["n_kept"]) for meta in metas]


@functools.cache
def training_inputs():
    """The model, target and tokens, loaded only if the search trains (a reused mask needs none)."""
    bigrams = BigramModel(BigramCounts.load(snakemake.input.bigrams))
    tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=bigrams.vocab_size)
    model = io.load_model(snakemake.params.model_dir)
    io.check_vocab_fits(bigrams.vocab_size, model, source=snakemake.input.bigrams)
    target = targets.make_target("optimal", model, bigrams, matching["training"]["precision"])
    return model, target, tokens


def train(lam):
    config = training.MaskTrainingConfig(**matching["training"], lam=lam)
    return training.train_mask(*training_inputs(), config)


found = training.match_size(
    train,
    goal,
    tuple(matching["bracket"]),
    matching["tolerance"],
    matching["max_iterations"],
    known,
    reuse=lambda lam: training.load_result(*optimal[lam]),
)
result = found.result
meta = io.provenance(
    rule="match_mask_size", **w, target="optimal", lam=f"match-{w.bigram_lam}", lam_value=found.lam,
    matched=found.matched, goal_n_kept=goal, matching=matching, **result.summary(),
    n_kept=result.mask.n_kept, n_total=result.mask.n_total,
)  # fmt: skip
result.mask.save(snakemake.output.mask, meta=meta)
io.write_table(result.history, snakemake.output.history)
io.write_table(found.search, snakemake.output.search)
io.write_json(meta, snakemake.output.meta)

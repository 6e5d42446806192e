"""Train the optimal subnetwork whose size matches a bigram subnetwork's, searching λ from the
sizes of the configured optimal subnetworks (one already matched in size is reused)."""

import functools

from bigram_subnetworks import io, jobs, logs, size_matching, targets, training
from bigram_subnetworks.api import Subnetwork, model_fingerprint

logs.start(snakemake)
w, out, matching = snakemake.wildcards, snakemake.output, snakemake.params.matching
goal = io.read_json(snakemake.input.bigram_meta)["n_kept"]
metas = [io.read_json(path) for path in snakemake.input.optimal_metas]
saved = zip(snakemake.input.optimal_masks, snakemake.input.optimal_histories, metas, strict=True)
optimal = {meta["lam_value"]: (mask, history, meta) for mask, history, meta in saved}
job = functools.cache(lambda: jobs.model_inputs(snakemake))  # loaded only if the search trains


def train(lam):
    cfg = training.MaskTrainingConfig(**matching["training"], lam=lam)
    target = targets.make_target("optimal", job().model, job().bigrams, cfg.precision)
    return training.train_mask(job().model, target, job().tokens, cfg)


found = size_matching.match_size(
    train, goal, tuple(matching["bracket"]), matching["tolerance"], matching["max_iterations"],
    [(meta["lam_value"], meta["n_kept"]) for meta in metas],
    reuse=lambda lam: training.load_result(*optimal[lam]),
)  # fmt: skip
# The configured optimal masks are of the same checkpoint: their fingerprint is this model's.
fingerprint = metas[0]["provenance"] if metas else model_fingerprint(job().model)
cfg = training.MaskTrainingConfig(**matching["training"], lam=found.lam)
subnetwork = Subnetwork.from_result(found.result, cfg, "optimal", fingerprint)
provenance = io.provenance(rule="match_mask_size", **w, lam=f"match-{w.bigram_lam}")
matched = {"matched": found.matched, "goal_n_kept": goal, "matching": matching}
subnetwork.write_files(out.mask, out.history, out.meta, **provenance, **matched)
io.write_table(found.search, out.search)

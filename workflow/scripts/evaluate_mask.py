"""Evaluate one mask on the eval split: bigram r, cross-entropy, size, kept weights per block;
for optimal subnetworks also their fidelity to the full model."""

from bigram_subnetworks import evaluation, io, jobs, logs, training

logs.start(snakemake)
settings = snakemake.params.evaluation
job = jobs.model_inputs(snakemake, max_sequences=settings["max_sequences"], mask=True)
metrics = evaluation.evaluate_mask(
    job.model, job.mask, job.tokens, job.bigrams, settings["batch_size"],
    fidelity=snakemake.params.fidelity,
)  # fmt: skip
meta = io.read_json(snakemake.input.meta)
identity = {**snakemake.wildcards, "seed": int(snakemake.wildcards.seed)}
identity["lam_value"] = meta["lam_value"]  # size-matched λ is found in training, not configured
how_trained = {key: meta[key] for key in training.CONVERGENCE_KEYS}
metrics = {**identity, **metrics, **how_trained, "eval_sequences": len(job.tokens)}
io.write_json(metrics, snakemake.output.metrics)
layers = evaluation.kept_by_block(job.model, job.mask).assign(**identity)
io.write_table(layers, snakemake.output.layers)

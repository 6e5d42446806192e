"""The bigram r of one model checkpoint fed the current token alone (a 1-token sequence, after
the BOS token where the tokens use one), on the eval split: the model's own bigram map."""

from bigram_subnetworks import evaluation, io, jobs, logs

logs.start(snakemake)
settings = snakemake.params.evaluation
job = jobs.model_inputs(snakemake, max_sequences=settings["max_sequences"])
bos = io.read_json(snakemake.input.meta).get("bos_token_id")  # None: documents open without one
# As many 1-token sequences per forward pass as an eval batch has tokens.
batch = settings["batch_size"] * job.tokens.shape[1]
metrics = evaluation.context_free_correlations(job.model, job.tokens, job.bigrams, batch, bos)
identity = {**snakemake.wildcards, "bos_token_id": bos, "eval_sequences": len(job.tokens)}
io.write_json({**identity, **metrics}, snakemake.output.metrics)

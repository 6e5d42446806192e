"""Ablation of one subnetwork: eval surprisal and generated text for the five conditions, and
the dose-response of random removal."""

from bigram_subnetworks import ablation, io, jobs, logs, tokenizer

logs.start(snakemake)
evaluation, params = snakemake.params.evaluation, snakemake.params
job = jobs.model_inputs(snakemake, max_sequences=evaluation["max_sequences"], mask=True)
job.tokens = job.tokens[: params.eval_sequences]  # null: all of those evaluation uses
vocab_size, batch_size, seed = job.bigrams.vocab_size, evaluation["batch_size"], params.control_seed
table = ablation.ablation(job.model, job.mask, job.tokens, vocab_size, batch_size, seed)
doses = ablation.dose_response(
    job.model, job.mask, job.tokens, vocab_size, batch_size, seed, conditions=table,
    **params.dose_response,
)  # fmt: skip
texts = ablation.generations(
    job.model, tokenizer.load_tokenizer(params.model_dir), job.mask, seed, **params.generation
)
identity = {**snakemake.wildcards, "seed": int(snakemake.wildcards.seed)}
io.write_table(table.assign(**identity), snakemake.output.ablation)
io.write_table(doses.assign(**identity), snakemake.output.dose_response)
io.write_table(texts.assign(**identity), snakemake.output.generations)
jobs.write_provenance(snakemake, snakemake.output.meta, eval_sequences=len(job.tokens))

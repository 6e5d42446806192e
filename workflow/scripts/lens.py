"""Residual-stream analyses of one bigram subnetwork: per-layer lenses and covariance similarity
for the full model, the subnetwork, its complement and a random same-count subnetwork."""

from bigram_subnetworks import corpus, io, jobs, lens, logs

logs.start(snakemake)
settings = snakemake.params.settings
job = jobs.model_inputs(
    snakemake, tokens="eval", max_sequences=settings["eval_sequences"], mask=True
)
fit = corpus.load_tokens(snakemake.input.fit, job.bigrams.vocab_size)  # held out from mask training
lens_table, covariance = lens.analyze_conditions(
    job.model, job.mask, fit, job.tokens, job.bigrams.vocab_size, settings["batch_size"],
    snakemake.params.control_seed, alpha=settings["ridge_alpha"], max_tokens=settings["max_tokens"],
)  # fmt: skip
identity = {**snakemake.wildcards, "seed": int(snakemake.wildcards.seed)}
io.write_table(lens_table.assign(**identity), snakemake.output.lens)
io.write_table(covariance.assign(**identity), snakemake.output.covariance)
jobs.write_provenance(snakemake, snakemake.output.meta, fit_sequences=len(fit))

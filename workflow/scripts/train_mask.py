"""Train one subnetwork (or write a sentinel mask) for a model checkpoint, target, λ and seed."""

from bigram_subnetworks import io, jobs, logs, targets, training
from bigram_subnetworks.api import Subnetwork, model_fingerprint

logs.start(snakemake)
w = snakemake.wildcards
cfg = training.MaskTrainingConfig(**snakemake.params.training)
job = jobs.model_inputs(snakemake)
fingerprint = model_fingerprint(job.model)
target = targets.make_target(w.target, job.model, job.bigrams, cfg.precision)
resume = training.resume_for(snakemake.params.resume_dir, snakemake.params.resume_every, cfg)
result = training.fit_mask(job.model, target, job.tokens, cfg, label=w.lam, resume=resume)
subnetwork = Subnetwork.from_result(result, cfg, w.target, fingerprint)
out = snakemake.output
subnetwork.write_files(out.mask, out.history, out.meta, **io.provenance(rule="train_mask", **w))

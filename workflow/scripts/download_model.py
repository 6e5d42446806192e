"""Snapshot one revision of a hub model (weights, config, tokenizer) for offline compute jobs."""

from bigram_subnetworks import hub, io, logs

logs.setup(snakemake.log[0])
w = snakemake.wildcards
files = hub.snapshot_model(snakemake.params.source, w.revision, snakemake.output.model)
meta = io.provenance(rule="download_model", source=snakemake.params.source, **w, files=files)
io.write_json(meta, f"{snakemake.output.model}/meta.json")

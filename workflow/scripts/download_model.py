"""Snapshot one revision of a hub model (weights, config, tokenizer) for offline compute jobs; a
GGUF file is dequantized into the same layout. The checkpoint must be of the configured family."""

from bigram_subnetworks import hub, io, logs

logs.start(snakemake, threads=False)
w = snakemake.wildcards
source = hub.resolve_source(snakemake.params.hub)
gguf_file = snakemake.params.hub.get("gguf_file")
files = hub.snapshot_model(
    source, w.revision, snakemake.output.model, gguf_file=gguf_file, arch=snakemake.params.arch
)
meta = io.provenance(
    rule="download_model", source=source, hub=snakemake.params.hub, **w, files=files
)
if gguf_file is not None:  # the dequantization's own record: file, sha256, quantization type
    meta["gguf"] = io.read_json(f"{snakemake.output.model}/meta.json")
io.write_json(meta, f"{snakemake.output.model}/meta.json")

"""Collect the corpus documents named by the config into one JSON Lines file, with their
provenance (for the offline English corpus, each source's package, sha256, licence and counts)."""

from bigram_subnetworks import io, logs, texts

logs.start(snakemake, threads=False)
# The offline English corpus's package files, by artifact (none for the other sources).
artifacts = dict(snakemake.input.items())
documents, provenance = texts.corpus_from_config(snakemake.params.corpus, artifacts)
texts.write_documents(documents, snakemake.output.documents)
io.write_json(
    io.provenance(rule="corpus", corpus=snakemake.params.corpus, **provenance),
    snakemake.output.meta,
)

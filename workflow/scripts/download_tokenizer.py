"""Snapshot a pretrained model's tokenizer from the hub for tokenization and bigram counting."""

from bigram_subnetworks import hub, logs

logs.start(snakemake, threads=False)
source = snakemake.params.hub
hub.snapshot_tokenizer(source["id"], source["revision"], snakemake.output.tokenizer)

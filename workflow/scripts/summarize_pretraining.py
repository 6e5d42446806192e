"""Eval loss of every pretrained model over training, beside bigram and unigram baselines."""

import pandas as pd

from bigram_subnetworks import corpus, io, logs
from bigram_subnetworks.bigrams import BigramCounts, BigramModel

logs.setup(snakemake.log[0])
tables = []
for model, history, tokens, counts in zip(
    snakemake.params.models,
    snakemake.input.histories,
    snakemake.input.eval_tokens,
    snakemake.input.bigrams,
    strict=True,
):
    bigrams = BigramModel(BigramCounts.load(counts))
    sequences = corpus.load_tokens(tokens)[: snakemake.params.eval_sequences[model]]
    baselines = bigrams.baselines(sequences)
    tables.append(pd.read_csv(history, sep="\t").assign(model=model, **baselines))
io.write_table(pd.concat(tables, ignore_index=True), snakemake.output.table)

"""Eval loss of every pretrained model over training, beside bigram and unigram baselines."""

import logging

import pandas as pd

from bigram_subnetworks import corpus, io, logs
from bigram_subnetworks.bigrams import BigramCounts, BigramModel

logs.start(snakemake, threads=False)
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
    table = io.read_table(history).assign(model=model, **baselines)
    tables.append(table.assign(beats_bigram=table["eval_loss"] < table["bigram_loss"]))
    final = table.iloc[-1]
    logging.info("%s: final eval loss %.3f, smoothed bigram %.3f, unigram %.3f", model,
                 final["eval_loss"], final["bigram_loss"], final["unigram_loss"])  # fmt: skip
io.write_table(pd.concat(tables, ignore_index=True), snakemake.output.table)

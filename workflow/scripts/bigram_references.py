"""What every bigram r of one tokenizer's table is read against: the r of a unigram predictor
(floor), of a smoothed bigram model of one half of the training text against the other half's
table (generalizing), and of the smoothed table itself (copy), on the eval tokens."""

from dataclasses import asdict

from bigram_subnetworks import corpus, io, logs, references
from bigram_subnetworks.bigrams import BigramCounts

logs.start(snakemake, threads=False)
counts = BigramCounts.load(snakemake.input.counts)
train = corpus.load_tokens(snakemake.input.train, vocab_size=counts.vocab_size)
tokens = corpus.load_tokens(snakemake.input.eval, vocab_size=counts.vocab_size)
tokens = tokens[: snakemake.params.max_sequences]
found = references.bigram_references(train, counts, tokens, threads=snakemake.threads)
meta = io.provenance(
    rule="bigram_references",
    tokenizer=snakemake.wildcards.tokenizer,
    eval_sequences=len(tokens),
    train_sequences=len(train),
    smoothing="interpolated absolute discounting, add-one unigram backoff",
    noise_blocks=references.NOISE_BLOCKS,
    **asdict(found),
)
io.write_json(meta, snakemake.output.references)

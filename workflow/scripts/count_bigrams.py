"""Count bigrams (with the sequence-start context) and unigrams of every training sequence, a
larger budget than the mask-training subset (both sizes recorded)."""

from bigram_subnetworks import corpus, io, logs, tokenizer
from bigram_subnetworks.bigrams import BigramCounts

logs.start(snakemake, threads=False)
vocab_size = len(tokenizer.load_tokenizer(snakemake.input.tokenizer))
tokens = corpus.load_tokens(snakemake.input.tokens, vocab_size=vocab_size)
counts = BigramCounts.count(tokens, vocab_size, threads=snakemake.threads)
counts.save(snakemake.output.counts)
shapes = io.read_json(snakemake.input.meta)["shapes"]
meta = io.provenance(
    rule="count_bigrams",
    tokenizer=snakemake.wildcards.tokenizer,
    vocab_size=vocab_size,
    sequences=len(tokens),
    tokens=int(tokens.size),
    mask_training_sequences=shapes["mask_train"][0],
    distinct_bigrams=int(counts.pairs.nnz),
    seen_contexts=int((counts.pairs.getnnz(axis=1) > 0).sum()),
)
io.write_json(meta, snakemake.output.meta)

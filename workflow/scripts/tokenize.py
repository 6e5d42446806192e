"""Cut the corpus into fixed-length sequences with one tokenizer: every training sequence (the
bigram counts), the mask-training subset, the residual-stream fit set held out from it, and eval."""

from bigram_subnetworks import corpus, io, logs, texts, tokenizer

logs.start(snakemake, threads=False)
params = snakemake.params
tok = tokenizer.load_tokenizer(snakemake.input.tokenizer)
documents = texts.read_documents(snakemake.input.documents)
boundaries = corpus.document_boundaries(tok)
train, evaluation = corpus.tokenize_documents(
    tok, documents, seq_len=params.seq_len, eval_fraction=params.eval_fraction,
    seed=params.split_seed, boundaries=boundaries,
)  # fmt: skip
splits = corpus.split_training(
    train, params.train_sequences, params.lens_sequences, params.bigram_sequences
)
splits["eval"] = evaluation[: params.eval_sequences]
for name, array in splits.items():
    corpus.save_tokens(array, snakemake.output[name])
meta = io.provenance(
    rule="tokenize", tokenizer=snakemake.wildcards.tokenizer, vocab_size=len(tok),
    shapes={name: list(array.shape) for name, array in splits.items()},
    document_boundaries=boundaries.as_dict(), bos_token_id=boundaries.bos_id, **params,
)  # fmt: skip
io.write_json(meta, snakemake.output.meta)

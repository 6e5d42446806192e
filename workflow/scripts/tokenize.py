"""Cut the corpus into fixed-length train and eval sequences with one tokenizer."""

from bigram_subnetworks import corpus, io, logs, tokenizer

logs.setup(snakemake.log[0])
tok = tokenizer.load_tokenizer(snakemake.input.tokenizer)
documents = corpus.read_documents(snakemake.input.documents)
train, evaluation = corpus.tokenize_documents(
    tok,
    documents,
    seq_len=snakemake.params.seq_len,
    eval_fraction=snakemake.params.eval_fraction,
    seed=snakemake.params.split_seed,
)
# The paper's subsets (500k training, 10k eval sequences); the split shuffled documents already.
train = train[: snakemake.params.train_sequences]
evaluation = evaluation[: snakemake.params.eval_sequences]
corpus.save_tokens(train, snakemake.output.train)
corpus.save_tokens(evaluation, snakemake.output.eval)
meta = io.provenance(
    rule="tokenize",
    tokenizer=snakemake.wildcards.tokenizer,
    vocab_size=len(tok),
    train_shape=list(train.shape),
    eval_shape=list(evaluation.shape),
    seq_len=snakemake.params.seq_len,
    eval_fraction=snakemake.params.eval_fraction,
    split_seed=snakemake.params.split_seed,
    train_sequences=snakemake.params.train_sequences,
    eval_sequences=snakemake.params.eval_sequences,
)
io.write_json(meta, snakemake.output.meta)

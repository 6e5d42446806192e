"""Pretrain one tiny model from scratch, saving every configured checkpoint with its tokenizer."""

from bigram_subnetworks import corpus, io, logs, pretrain, tokenizer

logs.start(snakemake)
shape, cfg = pretrain.configs_from_dict(snakemake.params.arch, snakemake.params.pretrain)
tok = tokenizer.load_tokenizer(snakemake.input.tokenizer)
train = corpus.load_tokens(snakemake.input.train, vocab_size=len(tok))
evaluation = corpus.load_tokens(snakemake.input.eval, vocab_size=len(tok))
every = snakemake.config["resume"]["pretrain_every"]
resume = pretrain.resume_for(snakemake.params.resume_dir, every, shape, cfg, len(tok))
history = pretrain.pretrain_to_directory(
    shape, cfg, train, evaluation, tok, snakemake.output.checkpoints, resume=resume
)
io.write_table(history, snakemake.output.history)
meta = io.provenance(
    rule="pretrain",
    model=snakemake.wildcards.model,
    arch=snakemake.params.arch,
    pretrain=snakemake.params.pretrain,
    vocab_size=len(tok),
    final_eval_loss=float(history["eval_loss"].iloc[-1]),
)
io.write_json(meta, snakemake.output.meta)

"""Train the byte-level BPE of the models pretrained in the pipeline."""

from bigram_subnetworks import logs, texts, tokenizer

logs.start(snakemake, threads=False)
documents = texts.read_documents(snakemake.input.documents)
trained = tokenizer.train_bpe(documents, vocab_size=snakemake.params.vocab_size)
tokenizer.save_tokenizer(trained, snakemake.output.tokenizer)

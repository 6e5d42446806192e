# Corpus, tokenizers, fixed-length token sequences and bigram counts (paper-spec §2).


rule corpus:
    output:
        documents="results/corpus/documents.jsonl",
        meta="results/corpus/meta.json",
    log:
        "logs/corpus.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        corpus=config["corpus"],
    script:
        "../scripts/corpus.py"


rule train_tokenizer:
    input:
        documents=rules.corpus.output.documents,
    output:
        tokenizer=directory("results/tokenizers/{tokenizer}"),
    log:
        "logs/train_tokenizer/{tokenizer}.log",
    wildcard_constraints:
        tokenizer=one_of(GRID.trained_tokenizers()),
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        vocab_size=tokenizer_vocab_size,
    script:
        "../scripts/train_tokenizer.py"


rule download_tokenizer:
    input:
        model=tokenizer_model_snapshot,
    output:
        tokenizer=directory("results/tokenizers/{tokenizer}"),
    log:
        "logs/download_tokenizer/{tokenizer}.log",
    wildcard_constraints:
        tokenizer=one_of(GRID.hub_tokenizers()),
    # The network may flake: retried everywhere (a rule's own retries win over --retries).
    retries: 3
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        hub=hub_tokenizer,
    script:
        "../scripts/download_tokenizer.py"


rule tokenize:
    input:
        documents=rules.corpus.output.documents,
        tokenizer=rules.train_tokenizer.output.tokenizer,
    output:
        bigrams="results/tokens/{tokenizer}/train.npy",
        mask_train="results/tokens/{tokenizer}/mask_train.npy",
        lens_fit="results/tokens/{tokenizer}/lens_fit.npy",
        eval="results/tokens/{tokenizer}/eval.npy",
        meta="results/tokens/{tokenizer}/meta.json",
    log:
        "logs/tokenize/{tokenizer}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        seq_len=config["corpus"]["seq_len"],
        eval_fraction=config["corpus"]["eval_fraction"],
        split_seed=config["corpus"]["split_seed"],
        train_sequences=config["corpus"]["train_sequences"],
        bigram_sequences=config["corpus"]["bigram_sequences"],
        lens_sequences=config["residual_stream"]["fit_sequences"],
        eval_sequences=config["corpus"]["eval_sequences"],
    script:
        "../scripts/tokenize.py"


rule count_bigrams:
    input:
        tokens=rules.tokenize.output.bigrams,
        meta=rules.tokenize.output.meta,
        tokenizer=rules.train_tokenizer.output.tokenizer,
    output:
        counts="results/bigrams/{tokenizer}/counts.npz",
        meta="results/bigrams/{tokenizer}/meta.json",
    log:
        "logs/count_bigrams/{tokenizer}.log",
    benchmark:
        "results/benchmarks/count_bigrams/{tokenizer}.tsv"
    # Every mask waits for the counts: run them before the long pretraining jobs take the cores.
    priority: 10
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    script:
        "../scripts/count_bigrams.py"

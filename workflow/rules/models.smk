# Models: tiny ones pretrained here with log-spaced checkpoints (and how they compare with
# bigrams), or hub snapshots, one per revision, downloaded on the head node into resources/.


rule download_model:
    output:
        model=directory(paths.SNAPSHOT),
    log:
        "logs/download_model/{model}/{revision}.log",
    wildcard_constraints:
        model=one_of(GRID.hub_models()),
    # The network may flake: retried everywhere (a rule's own retries win over --retries).
    retries: 3
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        hub=hub_model,
        arch=model_arch,
    script:
        "../scripts/download_model.py"


rule downloads:
    input:
        download_outputs(),


rule pretrain:
    input:
        train=model_tokens("train"),
        eval=model_tokens("eval"),
        tokenizer=tokenizer_dir,
    output:
        checkpoints=directory(f"{paths.PRETRAINED}/checkpoints"),
        history=f"{paths.PRETRAINED}/history.tsv",
        meta=f"{paths.PRETRAINED}/meta.json",
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        f"{paths.BENCHMARKS}/pretrain/{{model}}.tsv"
    wildcard_constraints:
        model=one_of(PRETRAINED),
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=retried_runtime(120),
    params:
        arch=model_arch,
        pretrain=pretrain_params,
        code=library_code("pretrain"),
        # Not an output: Snakemake removes the outputs of a killed job, the snapshots must stay.
        resume_dir=f"{paths.RESUME}/pretrain/{{model}}",
    script:
        "../scripts/pretrain.py"


rule summarize_pretraining:
    input:
        histories=models_of("history.tsv"),
        eval_tokens=per_model_tokenizer(f"{paths.TOKENS}/eval.npy"),
        bigrams=per_model_tokenizer(f"{paths.BIGRAMS}/counts.npz"),
    output:
        table=report(
            f"{paths.TABLES}/pretraining.tsv",
            caption="../report/tables/pretraining.rst",
            category="Tables",
            labels={"table": "pretraining"},
        ),
    log:
        "logs/summarize_pretraining.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        models=PRETRAINED,
        eval_sequences=eval_sequences_per_model(),
        code=library_code("summarize_pretraining"),
    script:
        "../scripts/summarize_pretraining.py"

# Subnetworks: one mask per model × checkpoint × target × λ × seed, its evaluation, and the
# tidy tables. Targets: `bigram` and `optimal` (the full model itself); docs/method.md §3–§7.


rule train_mask:
    input:
        checkpoints=model_checkpoints,
        tokens=model_tokens("mask_train"),
        bigrams=model_bigrams,
    output:
        mask=f"{paths.MASK}/mask.safetensors",
        history=f"{paths.MASK}/history.tsv",
        meta=f"{paths.MASK}/meta.json",
    log:
        f"logs/train_mask/{paths.MASK_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/train_mask/{paths.MASK_KEY}.tsv"
    wildcard_constraints:
        lam=TRAINED_LABELS,
    priority: critical_path_priority
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        runtime=model_resource("runtime", 120),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        training=mask_training_params,
        code=library_code("train_mask"),
        # Not an output: Snakemake removes the outputs of a killed job, the snapshots must stay.
        resume_dir=f"{paths.RESUME}/train_mask/{paths.MASK_KEY}",
        resume_every=CONFIG.resume.mask_every,
    script:
        "../scripts/train_mask.py"


rule match_mask_size:
    input:
        bigram_meta=mask_file("bigram", "bigram_lam", "meta.json"),
        optimal_metas=configured_optimal_files("meta.json"),
        optimal_masks=configured_optimal_files("mask.safetensors"),
        optimal_histories=configured_optimal_files("history.tsv"),
        checkpoints=model_checkpoints,
        tokens=model_tokens("mask_train"),
        bigrams=model_bigrams,
    output:
        mask=f"{paths.MATCHED_MASK}/mask.safetensors",
        history=f"{paths.MATCHED_MASK}/history.tsv",
        meta=f"{paths.MATCHED_MASK}/meta.json",
        search=f"{paths.MATCHED_MASK}/search.tsv",
    log:
        f"logs/match_mask_size/{paths.MATCHED_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/match_mask_size/{paths.MATCHED_KEY}.tsv"
    priority: 2
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        # One training per search step.
        runtime=model_resource("runtime", 120, times=GRID.size_matching()["max_iterations"]),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        matching=size_matching_params,
        code=library_code("match_mask_size"),
    script:
        "../scripts/match_mask_size.py"


rule evaluate_mask:
    input:
        mask=f"{paths.MASK}/mask.safetensors",
        meta=f"{paths.MASK}/meta.json",
        checkpoints=model_checkpoints,
        tokens=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        metrics=f"{paths.MASK}/metrics.json",
        layers=f"{paths.MASK}/layers.tsv",
    log:
        f"logs/evaluate_mask/{paths.MASK_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/evaluate_mask/{paths.MASK_KEY}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        runtime=model_resource("runtime", 60),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        evaluation=model_evaluation,
        fidelity=wants_fidelity,
        code=library_code("evaluate_mask"),
    script:
        "../scripts/evaluate_mask.py"


# What every bigram r is read against (docs/method.md §6): per tokenizer, the r of predictors
# built from its table's training text; per model checkpoint, the model fed one token at a time.
rule bigram_references:
    input:
        train=rules.tokenize.output.bigrams,
        eval=rules.tokenize.output.eval,
        counts=rules.count_bigrams.output.counts,
    output:
        references=f"{paths.REFERENCES}/references.json",
    log:
        "logs/bigram_references/{tokenizer}.log",
    benchmark:
        f"{paths.BENCHMARKS}/bigram_references/{{tokenizer}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        max_sequences=CONFIG.evaluation.max_sequences,
        code=library_code("bigram_references"),
    script:
        "../scripts/bigram_references.py"


rule context_free:
    input:
        checkpoints=model_checkpoints,
        tokens=model_tokens("eval"),
        meta=model_tokens_meta,
        bigrams=model_bigrams,
    output:
        metrics=f"{paths.CONTEXT_FREE}/metrics.json",
    log:
        "logs/context_free/{model}/{revision}.log",
    benchmark:
        f"{paths.BENCHMARKS}/context_free/{{model}}/{{revision}}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        runtime=model_resource("runtime", 60),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        evaluation=model_evaluation,
        code=library_code("context_free"),
    script:
        "../scripts/context_free.py"


rule collect_metrics:
    input:
        metrics=mask_outputs("metrics.json"),
        layers=mask_outputs("layers.tsv"),
        references=reference_outputs(),
        context_free=context_free_outputs(),
    output:
        metrics=f"{paths.TABLES}/metrics.tsv",
        summary=report(
            f"{paths.TABLES}/metrics_summary.tsv",
            caption="../report/tables/metrics_summary.rst",
            category="Tables",
            labels={"table": "metrics_summary"},
        ),
        layers=report(
            f"{paths.TABLES}/layers.tsv",
            caption="../report/tables/layers.rst",
            category="Tables",
            labels={"table": "layers"},
        ),
        references=f"{paths.TABLES}/references.tsv",
    log:
        "logs/collect_metrics.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
        revisions=model_revisions(),
        tokenizers=model_tokenizers(),
        code=library_code("collect_metrics"),
    script:
        "../scripts/collect_metrics.py"


rule collect_histories:
    input:
        histories=trained_mask_outputs("history.tsv"),
        metas=trained_mask_outputs("meta.json"),
    output:
        table=f"{paths.TABLES}/training_curves.tsv",
    log:
        "logs/collect_histories.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
        revisions=model_revisions(),
        code=library_code("collect_histories"),
    script:
        "../scripts/collect_histories.py"


rule summarize_dynamics:
    input:
        metrics=rules.collect_metrics.output.metrics,
        layers=rules.collect_metrics.output.layers,
    output:
        table=report(
            f"{paths.TABLES}/dynamics.tsv",
            caption="../report/tables/dynamics.rst",
            category="Tables",
            labels={"table": "dynamics"},
        ),
    log:
        "logs/summarize_dynamics.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        lambdas=list(CONFIG.bigram_masks.intermediate),
        code=library_code("summarize_dynamics"),
    script:
        "../scripts/summarize_dynamics.py"

# Subnetworks: one mask per model × checkpoint × target × λ × seed, its evaluation, and the
# tidy tables. Targets: `bigram` (paper-spec §3) and `optimal` (the full model itself, §4).


rule train_mask:
    input:
        checkpoints=model_checkpoints,
        tokens=model_tokens("mask_train"),
        bigrams=model_bigrams,
    output:
        mask=f"{MASK_DIR}/mask.safetensors",
        history=f"{MASK_DIR}/history.tsv",
        meta=f"{MASK_DIR}/meta.json",
    log:
        "logs/train_mask/{model}/{revision}/{target}/lam-{lam}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/train_mask/{model}/{revision}/{target}/lam-{lam}/seed-{seed}.tsv"
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
        version=__version__,
        # Not an output: Snakemake removes the outputs of a killed job, the snapshots must stay.
        resume_dir="results/resume/train_mask/{model}/{revision}/{target}/lam-{lam}/seed-{seed}",
    script:
        "../scripts/train_mask.py"


rule match_mask_size:
    input:
        bigram_meta=mask_file("bigram", "bigram", "meta.json"),
        optimal_metas=configured_optimal_metas,
        checkpoints=model_checkpoints,
        tokens=model_tokens("mask_train"),
        bigrams=model_bigrams,
    output:
        mask="results/masks/{model}/{revision}/optimal/lam-match-{bigram}/seed-{seed}/mask.safetensors",
        history="results/masks/{model}/{revision}/optimal/lam-match-{bigram}/seed-{seed}/history.tsv",
        meta="results/masks/{model}/{revision}/optimal/lam-match-{bigram}/seed-{seed}/meta.json",
        search="results/masks/{model}/{revision}/optimal/lam-match-{bigram}/seed-{seed}/search.tsv",
    log:
        "logs/match_mask_size/{model}/{revision}/lam-match-{bigram}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/match_mask_size/{model}/{revision}/lam-match-{bigram}/seed-{seed}.tsv"
    priority: 1
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        # One training per bisection step.
        runtime=model_resource("runtime", 120, times=GRID.size_matching()["max_iterations"]),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        matching=size_matching_params,
        version=__version__,
    script:
        "../scripts/match_mask_size.py"


rule evaluate_mask:
    input:
        mask=f"{MASK_DIR}/mask.safetensors",
        meta=f"{MASK_DIR}/meta.json",
        checkpoints=model_checkpoints,
        tokens=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        metrics=f"{MASK_DIR}/metrics.json",
        layers=f"{MASK_DIR}/layers.tsv",
    log:
        "logs/evaluate_mask/{model}/{revision}/{target}/lam-{lam}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/evaluate_mask/{model}/{revision}/{target}/lam-{lam}/seed-{seed}.tsv"
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
        version=__version__,
    script:
        "../scripts/evaluate_mask.py"


rule collect_metrics:
    input:
        metrics=mask_outputs("metrics.json"),
        layers=mask_outputs("layers.tsv"),
    output:
        metrics="results/tables/metrics.tsv",
        summary=report(
            "results/tables/metrics_summary.tsv",
            caption="../report/tables/metrics_summary.rst",
            category="Tables",
            labels={"table": "metrics_summary"},
        ),
        layers=report(
            "results/tables/layers.tsv",
            caption="../report/tables/layers.rst",
            category="Tables",
            labels={"table": "layers"},
        ),
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
    script:
        "../scripts/collect_metrics.py"

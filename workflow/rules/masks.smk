# Subnetworks: one mask per model × checkpoint × target × λ × seed, its evaluation, and the
# tidy tables. Targets: `bigram` (paper-spec §3) and `optimal` (the full model itself, §4).


rule train_mask:
    input:
        checkpoints=model_checkpoints,
        tokens=model_tokens("train"),
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
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
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
        tokens=model_tokens("train"),
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
    threads: 1
    resources:
        mem_mb=4000,
        runtime=480,
    params:
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
    threads: 1
    resources:
        mem_mb=4000,
    params:
        evaluation=config["evaluation"],
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
        summary="results/tables/metrics_summary.tsv",
        layers="results/tables/layers.tsv",
    log:
        "logs/collect_metrics.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
    script:
        "../scripts/collect_metrics.py"

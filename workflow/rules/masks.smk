# Bigram subnetworks: one mask per model × checkpoint × λ, its evaluation, and the tidy tables.


rule train_mask:
    input:
        checkpoints=rules.pretrain.output.checkpoints,
        tokens=model_tokens("train"),
        bigrams=model_bigrams,
    output:
        mask=f"{MASK_DIR}/mask.safetensors",
        history=f"{MASK_DIR}/history.tsv",
        meta=f"{MASK_DIR}/meta.json",
    log:
        "logs/train_mask/{model}/{revision}/{target}/lam-{lam}.log",
    benchmark:
        "results/benchmarks/train_mask/{model}/{revision}/{target}/lam-{lam}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        training=mask_training_params,
        version=__version__,
    script:
        "../scripts/train_mask.py"


rule evaluate_mask:
    input:
        mask=rules.train_mask.output.mask,
        checkpoints=rules.pretrain.output.checkpoints,
        tokens=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        metrics=f"{MASK_DIR}/metrics.json",
        layers=f"{MASK_DIR}/layers.tsv",
    log:
        "logs/evaluate_mask/{model}/{revision}/{target}/lam-{lam}.log",
    benchmark:
        "results/benchmarks/evaluate_mask/{model}/{revision}/{target}/lam-{lam}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        evaluation=config["evaluation"],
        lam_value=mask_lambda_value,
        version=__version__,
    script:
        "../scripts/evaluate_mask.py"


rule collect_metrics:
    input:
        metrics=mask_outputs("metrics.json"),
        layers=mask_outputs("layers.tsv"),
    output:
        metrics="results/tables/metrics.tsv",
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


rule tables_all:
    input:
        rules.collect_metrics.output,
        rules.summarize_pretraining.output,

# Analyses of trained subnetworks: overlap of bigram and optimal subnetworks with a permutation
# null (paper-spec §6), ablations with generations (§5), residual-stream analyses (§7), and the
# training dynamics of bigram subnetworks across pretraining checkpoints.


rule overlap:
    input:
        bigram=mask_file("bigram", "bigram"),
        optimal=mask_file("optimal", "optimal"),
        checkpoints=model_checkpoints,
    output:
        summary=f"{OVERLAP_DIR}/overlap.json",
        blocks=f"{OVERLAP_DIR}/blocks.tsv",
    log:
        "logs/overlap/{model}/{revision}/bigram-{bigram}/optimal-{optimal}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/overlap/{model}/{revision}/bigram-{bigram}/optimal-{optimal}/seed-{seed}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=model_resource("mem_mb", 8000, growth=MEMORY_GROWTH),
        runtime=model_resource("runtime", 60),
    params:
        model_dir=model_dir,
        overlap=config["overlap"],
        version=__version__,
    script:
        "../scripts/overlap.py"


rule collect_overlap:
    input:
        summaries=overlap_outputs("overlap.json"),
        blocks=overlap_outputs("blocks.tsv"),
    output:
        overlap="results/tables/overlap.tsv",
        summary=report(
            "results/tables/overlap_summary.tsv",
            caption="../report/tables/overlap_summary.rst",
            category="Tables",
            labels={"table": "overlap_summary"},
        ),
        blocks="results/tables/overlap_blocks.tsv",
    log:
        "logs/collect_overlap.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
        revisions=model_revisions(),
    script:
        "../scripts/collect_overlap.py"


rule ablation:
    input:
        mask=f"{MASK_DIR}/mask.safetensors",
        checkpoints=model_checkpoints,
        tokens=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        ablation=f"{ABLATION_DIR}/ablation.tsv",
        generations=f"{ABLATION_DIR}/generations.tsv",
    log:
        "logs/ablation/{model}/{revision}/{target}/lam-{lam}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/ablation/{model}/{revision}/{target}/lam-{lam}/seed-{seed}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        runtime=model_resource("runtime", 60),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        ablation=config["ablation"],
        evaluation=model_evaluation,
        control_seed=control_seed("ablation"),
        version=__version__,
    script:
        "../scripts/ablation.py"


rule collect_ablation:
    input:
        ablations=ablation_outputs("ablation.tsv"),
        generations=ablation_outputs("generations.tsv"),
    output:
        ablation="results/tables/ablation.tsv",
        summary=report(
            "results/tables/ablation_summary.tsv",
            caption="../report/tables/ablation_summary.rst",
            category="Tables",
            labels={"table": "ablation_summary"},
        ),
        generations="results/tables/generations.tsv",
    log:
        "logs/collect_ablation.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
        revisions=model_revisions(),
    script:
        "../scripts/collect_ablation.py"


rule lens:
    input:
        mask=mask_file("bigram", "lam"),
        checkpoints=model_checkpoints,
        fit=model_tokens("lens_fit"),
        eval=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        lens=f"{LENS_DIR}/lens.tsv",
        covariance=f"{LENS_DIR}/covariance.tsv",
    log:
        "logs/lens/{model}/{revision}/lam-{lam}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/lens/{model}/{revision}/lam-{lam}/seed-{seed}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 16000, growth=MEMORY_GROWTH),
        runtime=model_resource("runtime", 240),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        settings=config["residual_stream"],
        control_seed=control_seed("residual_stream"),
        version=__version__,
    script:
        "../scripts/lens.py"


rule collect_lens:
    input:
        lens=lens_outputs("lens.tsv"),
        covariance=lens_outputs("covariance.tsv"),
    output:
        lens="results/tables/lens.tsv",
        summary=report(
            "results/tables/lens_summary.tsv",
            caption="../report/tables/lens_summary.rst",
            category="Tables",
            labels={"table": "lens_summary"},
        ),
        covariance="results/tables/covariance.tsv",
    log:
        "logs/collect_lens.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
        revisions=model_revisions(),
    script:
        "../scripts/collect_lens.py"


rule summarize_dynamics:
    input:
        metrics=rules.collect_metrics.output.metrics,
        layers=rules.collect_metrics.output.layers,
    output:
        table=report(
            "results/tables/dynamics.tsv",
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
        lambdas=config["bigram_masks"]["intermediate"],
    script:
        "../scripts/summarize_dynamics.py"


rule download_released_mask:
    output:
        pickle=f"{RELEASED_DIR}/subnetwork.pickle",
    log:
        "logs/download_released_mask/{model}/lam-{lam}.log",
    # The network may flake: retried everywhere (a rule's own retries win over --retries).
    retries: 3
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        source=released_source,
    script:
        "../scripts/download_released_mask.py"


rule import_released_mask:
    input:
        pickle=rules.download_released_mask.output.pickle,
        checkpoints=final_model_checkpoints,
    output:
        mask=f"{RELEASED_DIR}/mask.safetensors",
        meta=f"{RELEASED_DIR}/meta.json",
    log:
        "logs/import_released_mask/{model}/lam-{lam}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=model_resource("mem_mb", 4000),
    params:
        model_dir=final_model_dir,
        source=released_source,
        version=__version__,
    script:
        "../scripts/import_released_mask.py"


rule parity:
    input:
        ours=our_released_counterpart,
        theirs=rules.import_released_mask.output.mask,
        checkpoints=final_model_checkpoints,
    output:
        parity=f"{PARITY_DIR}/parity.json",
    log:
        "logs/parity/{model}/lam-{lam}.log",
    benchmark:
        "results/benchmarks/parity/{model}/lam-{lam}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=model_resource("mem_mb", 8000),
    params:
        model_dir=final_model_dir,
        overlap=config["overlap"],
        identity=released_identity,
        source=released_source,
    script:
        "../scripts/parity.py"


rule collect_parity:
    input:
        parity=parity_outputs(),
    output:
        parity=report(
            "results/tables/parity.tsv",
            caption="../report/tables/parity.rst",
            category="Tables",
            labels={"table": "parity"},
        ),
    log:
        "logs/collect_parity.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        archs=model_archs(),
        revisions=model_revisions(),
    script:
        "../scripts/collect_parity.py"


rule tables_all:
    input:
        rules.collect_metrics.output,
        rules.summarize_pretraining.output if PRETRAINED else [],
        rules.collect_overlap.output,
        rules.collect_ablation.output,
        rules.collect_lens.output,
        rules.summarize_dynamics.output,
        rules.collect_parity.output if GRID.released_runs() else [],

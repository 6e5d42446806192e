# Residual-stream analyses of bigram subnetworks: per-layer lenses, rotations, covariance
# similarity (docs/method.md §10).


rule lens:
    input:
        mask=mask_file("bigram", "lam"),
        checkpoints=model_checkpoints,
        fit=model_tokens("lens_fit"),
        eval=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        lens=f"{paths.LENS}/lens.tsv",
        covariance=f"{paths.LENS}/covariance.tsv",
        meta=f"{paths.LENS}/meta.json",
    log:
        f"logs/lens/{paths.LENS_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/lens/{paths.LENS_KEY}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 16000, growth=MEMORY_GROWTH),
        runtime=model_resource("runtime", 240),
        gpu=model_gpu,
    params:
        model_dir=model_dir,
        settings=section(
            "residual_stream", "eval_sequences", "batch_size", "ridge_alpha", "max_tokens"
        ),
        control_seed=control_seed("residual_stream"),
        code=library_code("lens"),
    script:
        "../scripts/lens.py"


rule collect_lens:
    input:
        lens=lens_outputs("lens.tsv"),
        covariance=lens_outputs("covariance.tsv"),
    output:
        lens=f"{paths.TABLES}/lens.tsv",
        summary=report(
            f"{paths.TABLES}/lens_summary.tsv",
            caption="../report/tables/lens_summary.rst",
            category="Tables",
            labels={"table": "lens_summary"},
        ),
        covariance=f"{paths.TABLES}/covariance.tsv",
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
        code=library_code("collect_lens"),
    script:
        "../scripts/collect_lens.py"

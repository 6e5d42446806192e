# Necessity and sufficiency: five ablation conditions and their generations, and the
# dose-response of random removal (docs/method.md §9).


rule ablation:
    input:
        mask=f"{paths.MASK}/mask.safetensors",
        checkpoints=model_checkpoints,
        tokens=model_tokens("eval"),
        bigrams=model_bigrams,
    output:
        ablation=f"{paths.ABLATION}/ablation.tsv",
        dose_response=f"{paths.ABLATION}/dose_response.tsv",
        generations=f"{paths.ABLATION}/generations.tsv",
        meta=f"{paths.ABLATION}/meta.json",
    log:
        f"logs/ablation/{paths.MASK_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/ablation/{paths.MASK_KEY}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: model_threads
    resources:
        mem_mb=model_resource("mem_mb", 4000),
        runtime=model_resource("runtime", 60),
        gpu=model_gpu,
    params:
        **section("ablation", "generation", "dose_response", "eval_sequences"),
        model_dir=model_dir,
        evaluation=model_evaluation,
        control_seed=control_seed("ablation"),
        code=library_code("ablation"),
    script:
        "../scripts/ablation.py"


rule collect_ablation:
    input:
        ablations=ablation_outputs("ablation.tsv"),
        dose_responses=ablation_outputs("dose_response.tsv"),
        generations=ablation_outputs("generations.tsv"),
    output:
        ablation=f"{paths.TABLES}/ablation.tsv",
        summary=report(
            f"{paths.TABLES}/ablation_summary.tsv",
            caption="../report/tables/ablation_summary.rst",
            category="Tables",
            labels={"table": "ablation_summary"},
        ),
        dose_response=f"{paths.TABLES}/ablation_dose_response.tsv",
        generations=f"{paths.TABLES}/generations.tsv",
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
        code=library_code("collect_ablation"),
    script:
        "../scripts/collect_ablation.py"

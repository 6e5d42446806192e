# The authors' released masks, imported and compared with ours (docs/method.md §12).


rule download_released_mask:
    output:
        pickle=f"{paths.RELEASED_DOWNLOAD}/subnetwork.pickle",
    log:
        f"logs/download_released_mask/{paths.RELEASED_KEY}.log",
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
        mask=f"{paths.RELEASED}/mask.safetensors",
        meta=f"{paths.RELEASED}/meta.json",
    log:
        f"logs/import_released_mask/{paths.RELEASED_KEY}.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=model_resource("mem_mb", 4000),
    params:
        model_dir=final_model_dir,
        source=released_source,
        code=library_code("import_released_mask"),
    script:
        "../scripts/import_released_mask.py"


rule parity:
    input:
        ours=our_released_counterpart,
        theirs=rules.import_released_mask.output.mask,
        checkpoints=final_model_checkpoints,
    output:
        parity=f"{paths.PARITY}/parity.json",
    log:
        f"logs/parity/{paths.RELEASED_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/parity/{paths.RELEASED_KEY}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=model_resource("mem_mb", 8000),
    params:
        model_dir=final_model_dir,
        null=CONFIG.overlap_null(),
        identity=released_identity,
        source=released_source,
        code=library_code("parity"),
    script:
        "../scripts/parity.py"


rule collect_parity:
    input:
        parity=parity_outputs(),
    output:
        parity=report(
            f"{paths.TABLES}/parity.tsv",
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
        code=library_code("collect_parity"),
    script:
        "../scripts/collect_parity.py"

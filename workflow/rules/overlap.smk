# Overlap of bigram and optimal subnetworks against a permutation null, beside the bigram
# subnetwork's overlap with a magnitude mask of the optimal one's size (docs/method.md §8).


rule overlap:
    input:
        bigram=mask_file("bigram", "bigram_lam"),
        optimal=mask_file("optimal", "optimal_lam"),
        checkpoints=model_checkpoints,
    output:
        summary=f"{paths.OVERLAP}/overlap.json",
        blocks=f"{paths.OVERLAP}/blocks.tsv",
        meta=f"{paths.OVERLAP}/meta.json",
    log:
        f"logs/overlap/{paths.OVERLAP_KEY}.log",
    benchmark:
        f"{paths.BENCHMARKS}/overlap/{paths.OVERLAP_KEY}.tsv"
    conda:
        "../../envs/pipeline.yaml"
    threads: 2
    resources:
        mem_mb=model_resource("mem_mb", 8000, growth=MEMORY_GROWTH),
        runtime=model_resource("runtime", 60),
    params:
        model_dir=model_dir,
        null=CONFIG.overlap_null(),
        code=library_code("overlap"),
    script:
        "../scripts/overlap.py"


rule collect_overlap:
    input:
        summaries=overlap_outputs("overlap.json"),
        blocks=overlap_outputs("blocks.tsv"),
    output:
        overlap=f"{paths.TABLES}/overlap.tsv",
        summary=report(
            f"{paths.TABLES}/overlap_summary.tsv",
            caption="../report/tables/overlap_summary.rst",
            category="Tables",
            labels={"table": "overlap_summary"},
        ),
        blocks=f"{paths.TABLES}/overlap_blocks.tsv",
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
        code=library_code("collect_overlap"),
    script:
        "../scripts/collect_overlap.py"

# Figures: each reads tidy tables only, so a figure tweak never retrains anything.


rule plot_r_vs_size:
    input:
        metrics=rules.collect_metrics.output.metrics,
    output:
        png="results/figures/r_vs_size.png",
        pdf="results/figures/r_vs_size.pdf",
    log:
        "logs/plot_r_vs_size.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/plot_r_vs_size.py"


rule plot_kept_by_layer:
    input:
        layers=rules.collect_metrics.output.layers,
    output:
        png="results/figures/kept_by_layer.png",
        pdf="results/figures/kept_by_layer.pdf",
    log:
        "logs/plot_kept_by_layer.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/plot_kept_by_layer.py"


rule plot_pretraining:
    input:
        table=rules.summarize_pretraining.output.table,
    output:
        png="results/figures/pretraining.png",
        pdf="results/figures/pretraining.pdf",
    log:
        "logs/plot_pretraining.log",
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/plot_pretraining.py"


rule figures_all:
    input:
        rules.plot_r_vs_size.output,
        rules.plot_kept_by_layer.output,
        rules.plot_pretraining.output,

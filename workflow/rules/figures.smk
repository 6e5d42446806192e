# Figures: each reads one tidy table only, so a figure tweak never retrains anything. The
# function `plots.<figure>` draws figure `<figure>` from the table listed here.
FIGURE_TABLES = {
    "r_vs_size": rules.collect_metrics.output.summary,
    "kept_by_layer": rules.collect_metrics.output.layers,
    "training_curves": rules.collect_histories.output.table,
    "pretraining": rules.summarize_pretraining.output.table,
    "overlap": rules.collect_overlap.output.blocks,
    "ablation": rules.collect_ablation.output.summary,
    "ablation_dose_response": rules.collect_ablation.output.dose_response,
    "lens": rules.collect_lens.output.summary,
    "covariance": rules.collect_lens.output.covariance,
    "dynamics": rules.summarize_dynamics.output.table,
}
# The figures of an analysis a config leaves out (`Grid.analyses`) are not drawn.
FIGURES_OF = {
    "overlap": ["overlap"],
    "ablation": ["ablation", "ablation_dose_response"],
    "residual_stream": ["lens", "covariance"],
    "dynamics": ["dynamics"],
}
for analysis, figures in FIGURES_OF.items():
    for figure in figures if not ANALYSES[analysis] else []:
        del FIGURE_TABLES[figure]
if not PRETRAINED:  # hub models only: no pretraining curves to draw
    del FIGURE_TABLES["pretraining"]


rule plot:
    input:
        table=lambda wildcards: FIGURE_TABLES[wildcards.figure],
    output:
        png=report(
            f"{paths.FIGURES}/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
        pdf=f"{paths.FIGURES}/{{figure}}.pdf",
    log:
        "logs/plot/{figure}.log",
    wildcard_constraints:
        figure="|".join(FIGURE_TABLES),
    conda:
        "../../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        code=library_code("plot"),
    script:
        "../scripts/plot.py"


rule figures_all:
    input:
        expand(rules.plot.output, figure=FIGURE_TABLES),


rule tables_all:
    input:
        rules.collect_metrics.output,
        rules.collect_histories.output,
        rules.summarize_pretraining.output if PRETRAINED else [],
        rules.collect_overlap.output if ANALYSES["overlap"] else [],
        rules.collect_ablation.output if ANALYSES["ablation"] else [],
        rules.collect_lens.output if ANALYSES["residual_stream"] else [],
        rules.summarize_dynamics.output if ANALYSES["dynamics"] else [],
        rules.collect_parity.output if ANALYSES["released_masks"] else [],

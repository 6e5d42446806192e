"""One function per figure: a tidy table in, a matplotlib Figure out (no masks, no models)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from .architectures import BLOCKS, REGISTRY
from .atomic import atomic_path

ARCH_TITLES = {name: spec.title for name, spec in REGISTRY.items()}
# Attention blues, MLP oranges (gate, in/up, out/down from light to dark).
BLOCK_COLORS = dict(
    zip(
        BLOCKS,
        ["#9ecae1", "#6baed6", "#3182bd", "#08519c", "#fdd0a2", "#fd8d3c", "#d94701"],
        strict=True,
    )
)


def save_figure(figure: Figure, *paths: str | os.PathLike) -> None:
    """Write the figure to every path (format from the suffix), atomically."""
    for path in paths:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(figure)


def final_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's last (final) revision."""
    last = table.groupby("model")["checkpoint"].transform("max")
    return table[table["checkpoint"] == last]


def _error_bars(rows: pd.DataFrame, column: str):
    """Asymmetric 95% CI error bars from a seed summary; None when there is one seed."""
    low, high = f"{column}_ci_low", f"{column}_ci_high"
    if low not in rows or rows[low].isna().all():
        return None
    return [
        rows[column] - rows[low].fillna(rows[column]),
        rows[high].fillna(rows[column]) - rows[column],
    ]


TARGET_STYLES = {"bigram": {"ls": "-", "marker": "o"}, "optimal": {"ls": "--", "marker": "s"}}
# The bigram table's references (docs/method.md §6), grey, and the model's own, in its colour.
TABLE_REFERENCE_STYLES = {
    "floor": ("floor: unigram", ":"),
    "generalizing": ("generalizing: held-out smoothed bigram", "-."),
    "copy": ("copy: smoothed table", "--"),
}
MODEL_REFERENCE_STYLES = {
    "full": ("full model", (0, (6, 2))),
    "context_free": ("context-free", ":"),
}


def _reference(rows: pd.DataFrame, name: str, column: str) -> float | None:
    """A model's reference ``name`` of ``column`` (the same on all its rows), None if absent."""
    values = rows[f"{name}_{column}"].dropna() if f"{name}_{column}" in rows else ()
    return float(values.iloc[0]) if len(values) else None


def _reference_lines(ax, rows: pd.DataFrame, column: str, color: str, model: str, drawn: set):
    """Horizontal lines at a model's references of ``column`` where the table has them: the
    bigram table's in grey (once per panel for models that share a tokenizer; ``drawn`` holds
    those already drawn) and the model's own in its colour."""
    table = tuple(_reference(rows, name, column) for name in TABLE_REFERENCE_STYLES)
    if table not in drawn:
        drawn.add(table)
        for value, (label, ls) in zip(table, TABLE_REFERENCE_STYLES.values(), strict=True):
            if value is not None:
                ax.axhline(value, color="0.45", ls=ls, lw=1, label=label)
    for name, (label, ls) in MODEL_REFERENCE_STYLES.items():
        value = _reference(rows, name, column)
        if value is not None:
            ax.axhline(value, color=color, ls=ls, lw=0.8, label=f"{model}: {label}")


def r_vs_size(summary: pd.DataFrame, column: str = "r_drop_inf") -> Figure:
    """Paper Figure 1: bigram-surprisal r vs kept weights across λ, one curve per model; the
    optimal (pruning-baseline) subnetworks' bigram r dashed beside them (§5). Means over seeds
    with 95% CIs when there are several. Where the table has them, horizontal lines mark what
    the r is read against (docs/method.md §6): the bigram table's floor, generalizing and copy
    references (grey) and each model's full and context-free r (its colour)."""
    table = final_checkpoints(summary)
    table = table[table["n_kept"] > 0].sort_values("n_kept")
    archs = sorted(table["arch"].unique())
    figure, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        drawn: set[tuple] = set()
        for i, (model, of_model) in enumerate(table[table["arch"] == arch].groupby("model")):
            _reference_lines(ax, of_model, column, f"C{i}", model, drawn)
            for target, rows in of_model.groupby("target"):
                ax.errorbar(
                    rows["n_kept"],
                    rows[column],
                    yerr=_error_bars(rows, column),
                    color=f"C{i}",
                    capsize=2,
                    label=f"{model} ({target})",
                    **TARGET_STYLES.get(target, {}),
                )
                for _, row in rows.iterrows():
                    ax.annotate(
                        f"λ={row['lam']}",
                        (row["n_kept"], row[column]),
                        fontsize=7,
                        xytext=(3, -9),
                        textcoords="offset points",
                    )
        ax.set_xscale("log")
        ax.set_xlabel("subnetwork size (kept non-embedding weights)")
        ax.set_ylabel(f"bigram surprisal r ({column.removeprefix('r_').replace('_', '-')})")
        ax.set_title(ARCH_TITLES.get(arch, arch))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def kept_by_layer(layers: pd.DataFrame) -> Figure:
    """Kept weights per layer and block for each model's final-checkpoint bigram subnetworks
    (first seed)."""
    table = final_checkpoints(layers[layers["target"] == "bigram"])
    table = table[~table["lam"].isin(["full", "empty"]) & (table["seed"] == table["seed"].min())]
    models = sorted(table["model"].unique())
    lams = sorted(table["lam"].unique(), key=lambda lam: float(lam))
    figure, axes = plt.subplots(
        len(models),
        len(lams),
        figsize=(2.6 * len(lams) + 1, 2.4 * len(models)),
        squeeze=False,
        sharex=True,
    )
    for i, model in enumerate(models):
        for j, lam in enumerate(lams):
            ax = axes[i][j]
            rows = table[(table["model"] == model) & (table["lam"] == lam)]
            pivot = rows.pivot_table(index="layer", columns="block", values="n_kept", aggfunc="sum")
            bottom = pd.Series(0, index=pivot.index, dtype=float)
            for block in [b for b in BLOCKS if b in pivot.columns]:
                ax.bar(
                    pivot.index, pivot[block], bottom=bottom, color=BLOCK_COLORS[block], label=block
                )
                bottom += pivot[block]
            ax.set_title(f"{model}, λ={lam}", fontsize=9)
            ax.set_xticks(sorted(table["layer"].unique()))
            ax.set_xlabel("layer" if i == len(models) - 1 else "")
            ax.set_ylabel("kept weights" if j == 0 else "")
    # One legend for every block of every family in the table (the gate only in gated MLPs).
    present = [block for block in BLOCKS if block in set(table["block"])]
    handles = [Patch(color=BLOCK_COLORS[block], label=block) for block in present]
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    return figure


def pretraining(table: pd.DataFrame) -> Figure:
    """Eval loss of each pretrained model over steps, against its bigram and unigram baselines."""
    models = sorted(table["model"].unique())
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = table[table["model"] == model].sort_values("step")
        ax.plot(rows["step"].clip(lower=1), rows["eval_loss"], marker=".", label="model")
        baseline = rows.iloc[0]
        ax.axhline(
            baseline["bigram_loss"],
            color="C1",
            ls="--",
            label=f"smoothed bigram (w={baseline['bigram_weight']:.2f})",
        )
        ax.axhline(baseline["unigram_loss"], color="C2", ls=":", label="unigram")
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("eval cross-entropy (nats)")
        ax.set_title(model)
        top = max(baseline["unigram_loss"] * 1.15, math.log(2))
        ax.set_ylim(top=min(top, float(rows["eval_loss"].max()) * 1.02))
        ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


ABLATION_LABELS = {
    "full": "full model",
    "subnetwork": "subnetwork only",
    "random": "random, same counts",
    "full_minus_subnetwork": "full − subnetwork",
    "full_minus_random": "full − random",
}


def ablation(summary: pd.DataFrame) -> Figure:
    """Paper §5: mean eval surprisal (bits) per condition, one panel per ablated subnetwork.
    Error bars: the 95% CI across seeds when there are several, else ± the per-token std."""
    runs = summary.groupby(["model", "target", "lam"], sort=True)
    figure, axes = plt.subplots(1, runs.ngroups, figsize=(3.6 * runs.ngroups, 3.6), squeeze=False)
    for ax, ((model, target, lam), rows) in zip(axes[0], runs, strict=True):
        rows = rows.set_index("condition").reindex(list(ABLATION_LABELS)).reset_index()
        errors = _error_bars(rows, "mean_surprisal_bits")
        if errors is None:
            errors = rows["std_surprisal_bits"]
        ax.bar(
            range(len(rows)),
            rows["mean_surprisal_bits"],
            yerr=errors,
            capsize=3,
            color=["#636363", "#3182bd", "#9ecae1", "#d94701", "#fdae6b"],
        )
        ax.set_xticks(range(len(rows)), [ABLATION_LABELS[c] for c in rows["condition"]])
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
        ax.set_ylabel("eval surprisal (bits/token)")
        ax.set_title(f"{model}, {target} λ={lam}", fontsize=9)
    figure.tight_layout()
    return figure


def ablation_dose_response(table: pd.DataFrame) -> Figure:
    """docs/method.md §9: eval surprisal (bits) of the full model minus random weights against
    the fraction removed (log axis), one line per seed, with the full model minus the subnetwork
    as a star at its own size and the full model as a dashed line; one panel per ablated
    subnetwork."""
    runs = table.groupby(["model", "target", "lam"], sort=True)
    figure, axes = plt.subplots(1, runs.ngroups, figsize=(4.2 * runs.ngroups, 3.6), squeeze=False)
    for ax, ((model, target, lam), rows) in zip(axes[0], runs, strict=True):
        for i, (_, of_seed) in enumerate(rows.groupby("seed", sort=True)):
            random = of_seed[of_seed["removal"] == "random"].sort_values("n_removed")
            own = of_seed[of_seed["removal"] == "subnetwork"]
            first = i == 0
            ax.plot(
                random["fraction_removed"],
                random["mean_surprisal_bits"],
                "o-",
                ms=3,
                color="#3182bd",
                alpha=0.8,
                label="random removal" if first else None,
            )
            ax.plot(
                own["fraction_removed"],
                own["mean_surprisal_bits"],
                "*",
                ms=11,
                color="#d94701",
                label="subnetwork removed" if first else None,
            )
        full = rows.loc[rows["removal"] == "none", "mean_surprisal_bits"].mean()
        ax.axhline(full, color="#636363", ls="--", lw=1, label="full model")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # narrow ranges label minor ticks: crowded
        ax.set_xlabel("fraction of maskable weights removed")
        ax.set_ylabel("eval surprisal (bits/token)")
        ax.set_title(f"{model}, {target} λ={lam}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


CONDITION_LABELS = {
    "full": "full model",
    "subnetwork": "bigram subnetwork",
    "full_minus_subnetwork": "full − subnetwork",
    "random": "random, same counts",
}
LENS_PANELS = {
    "out_corr": "next-token lens r",
    "in_recall1": "current-token recall@1",
    "out_rotation": "median rotation, map to last layer (°)",
    "out_rotation_dominant": "dominant rotation, map to last layer (°)",
}


def lens(summary: pd.DataFrame) -> Figure:
    """Paper §7: per-layer next-token alignment, current-token retention and rotation (the
    paper's median over all eigenvalues, and over the dominant ones), for each condition, at
    each model's final checkpoint (means over seeds)."""
    table = final_checkpoints(summary)
    runs = list(table.groupby(["model", "lam"], sort=True))
    figure, axes = plt.subplots(
        len(runs), len(LENS_PANELS), figsize=(4 * len(LENS_PANELS), 3 * len(runs)), squeeze=False
    )
    for row_axes, ((model, lam), rows) in zip(axes, runs, strict=True):
        for ax, (column, title) in zip(row_axes, LENS_PANELS.items(), strict=True):
            for condition, label in CONDITION_LABELS.items():
                of = rows[rows["condition"] == condition].sort_values("layer")
                ax.errorbar(
                    of["layer"], of[column], yerr=_error_bars(of, column), marker=".", label=label
                )
            ax.set_title(f"{model}, λ={lam}: {title}", fontsize=9)
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    return figure


SIMILARITY_MEASURES = {"similarity": "covariance cosine", "cka": "linear CKA"}


def covariance(table: pd.DataFrame) -> Figure:
    """Paper §7 heatmaps: layer × layer covariance similarity (the paper's cosine) and linear
    CKA, one row each per run, for the full model, the bigram subnetwork and a random same-count
    subnetwork (final checkpoint, first seed)."""
    table = final_checkpoints(table)
    table = table[table["seed"] == table["seed"].min()]
    runs = [
        (run, rows, measure)
        for run, rows in table.groupby(["model", "lam"], sort=True)
        for measure in SIMILARITY_MEASURES
        if measure in rows
    ]
    panels = ["full", "subnetwork", "random"]
    figure, axes = plt.subplots(
        len(runs), len(panels), figsize=(3.6 * len(panels), 3.2 * len(runs)), squeeze=False
    )
    image = None
    for row_axes, ((model, lam), rows, measure) in zip(axes, runs, strict=True):
        for ax, condition in zip(row_axes, panels, strict=True):
            of = rows[rows["condition"] == condition]
            grid = of.pivot(index="layer_i", columns="layer_j", values=measure)
            image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis", origin="lower")
            title = (
                f"{model}, λ={lam}: {CONDITION_LABELS[condition]}\n{SIMILARITY_MEASURES[measure]}"
            )
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("layer j")
            ax.set_ylabel("layer i")
    figure.tight_layout()
    figure.colorbar(image, ax=axes.ravel().tolist(), label="similarity", shrink=0.8)
    return figure


DYNAMICS_PANELS = {
    "r_drop_inf": "bigram surprisal r (drop-inf)",
    "kept_fraction": "kept fraction",
    "first_mlp_share": "share of kept weights in the first MLP",
}


def dynamics(table: pd.DataFrame) -> Figure:
    """Bigram subnetworks across pretraining: r, size and first-MLP share vs step (log axis;
    step 0 is drawn at 1). Means over seeds."""
    models = sorted(table["model"].unique())
    figure, axes = plt.subplots(
        max(len(models), 1),
        len(DYNAMICS_PANELS),
        figsize=(4 * len(DYNAMICS_PANELS), 3 * max(len(models), 1)),
        squeeze=False,
    )
    means = table.groupby(["model", "lam", "step"], as_index=False)[list(DYNAMICS_PANELS)].mean()
    for row_axes, model in zip(axes, models, strict=False):
        for ax, (column, title) in zip(row_axes, DYNAMICS_PANELS.items(), strict=True):
            for lam, rows in means[means["model"] == model].groupby("lam"):
                ax.plot(rows["step"].clip(lower=1), rows[column], marker="o", label=f"λ={lam}")
            ax.set_xscale("log")
            if column == "kept_fraction":
                ax.set_yscale("log")
            ax.set_xlabel("pretraining step")
            ax.set_title(f"{model}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    if not models:
        axes[0][0].text(0.5, 0.5, "no intermediate checkpoints configured", ha="center")
    figure.tight_layout()
    return figure


def overlap(blocks: pd.DataFrame) -> Figure:
    """Paper §6: weights shared by the bigram and optimal subnetworks per layer, attention and
    MLP, against the count expected under the permutation null (first seed); black ticks: the
    bigram subnetwork's overlap with the magnitude control of the optimal one's size (§8), where
    the table has it (its ``pair`` column)."""
    table = blocks[blocks["seed"] == blocks["seed"].min()].copy()
    table["part"] = table["block"].str.startswith("attn").map({True: "attention", False: "MLP"})
    pair = table["pair"] if "pair" in table else pd.Series("bigram-optimal", table.index)
    control = table[pair == "bigram-magnitude"]
    table = table[pair == "bigram-optimal"]
    pairs = list(table.groupby(["model", "bigram_lam", "optimal_lam"], sort=True))
    figure, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 3.6), squeeze=False)
    width = 0.2
    for ax, ((model, bigram, optimal), rows) in zip(axes[0], pairs, strict=True):
        sums = rows.groupby(["part", "layer"])[["n_both", "expected_both"]].sum()
        key = (control["model"] == model) & (control["bigram_lam"] == bigram)
        of_control = control[key & (control["optimal_lam"] == optimal)]
        controls = of_control.groupby(["part", "layer"])["n_both"].sum()
        for i, (part, color) in enumerate((("attention", "#3182bd"), ("MLP", "#d94701"))):
            if part not in sums.index.get_level_values("part"):
                continue
            of = sums.loc[part]
            x = of.index.to_numpy() + (2 * i - 1.5) * width
            ax.bar(x, of["n_both"], width, color=color, label=f"{part}, actual")
            if part in controls.index.get_level_values("part"):
                ax.plot(
                    x,
                    controls.loc[part].reindex(of.index),
                    "_",
                    ms=9,
                    mew=2,
                    color="black",
                    label="magnitude control" if i == 0 else None,
                )
            ax.bar(
                x + width,
                of["expected_both"],
                width,
                color="white",
                edgecolor=color,
                hatch="//",
                label=f"{part}, expected",
            )
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xticks(sorted(rows["layer"].unique()))
        ax.set_xlabel("layer")
        ax.set_ylabel("weights in both subnetworks")
        ax.set_title(f"{model}: bigram λ={bigram} ∩ optimal λ={optimal}", fontsize=9)
        ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


CURVE_PANELS = {
    "xent": "cross-entropy to the target (nats)",
    "on_fraction": "kept fraction (soft mask > 0.9)",
    "undecided_fraction": "undecided fraction (0.1 ≤ soft mask ≤ 0.9)",
}
ATTEMPT_STYLES = ("-", ":", "--")


def training_curves(table: pd.DataFrame) -> Figure:
    """Mask training per model at its final checkpoint (first seed): the cross-entropy to the
    target, the kept and the undecided fractions against the step, one colour per λ, bigram
    subnetworks solid and optimal ones thin; a retried attempt is dotted (then dashed) and starts
    with a cross, so a spike the stability check rejected is visible."""
    table = final_checkpoints(table)
    table = table[table["seed"] == table["seed"].min()]
    models = sorted(table["model"].unique())
    figure, axes = plt.subplots(
        max(len(models), 1),
        len(CURVE_PANELS),
        figsize=(4.2 * len(CURVE_PANELS), 3 * max(len(models), 1)),
        squeeze=False,
    )
    for row_axes, model in zip(axes, models, strict=False):
        of_model = table[table["model"] == model]
        labels = sorted(of_model["lam"].unique(), key=lambda lam: of_model[of_model["lam"] == lam]
                        ["lam_value"].iloc[0])  # fmt: skip
        colors = {lam: f"C{i % 10}" for i, lam in enumerate(labels)}
        for ax, (column, title) in zip(row_axes, CURVE_PANELS.items(), strict=True):
            for (target, lam, attempt), rows in of_model.groupby(["target", "lam", "attempt"]):
                ax.plot(
                    rows["step"], rows[column], color=colors[lam],
                    ls=ATTEMPT_STYLES[min(int(attempt), len(ATTEMPT_STYLES) - 1)],
                    lw=1.6 if target == "bigram" else 0.8,
                    label=f"{target} λ={lam}" if attempt == 0 else None,
                )  # fmt: skip
                if attempt > 0:
                    ax.plot(rows["step"].iloc[0], rows[column].iloc[0], "x", color=colors[lam])
            ax.set_xlabel("step")
            ax.set_title(f"{model}: {title}", fontsize=9)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    if not models:
        axes[0][0].text(0.5, 0.5, "no trained masks", ha="center")
    figure.tight_layout()
    return figure

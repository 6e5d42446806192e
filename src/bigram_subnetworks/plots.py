"""One function per figure: a tidy table in, a matplotlib Figure out (no masks, no models)."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from .architectures import BLOCKS
from .atomic import atomic_path

ARCH_TITLES = {"gpt_neox": "GPT-NeoX (Pythia architecture)", "gpt2": "GPT-2"}
BLOCK_COLORS = dict(
    zip(BLOCKS, ["#9ecae1", "#6baed6", "#3182bd", "#08519c", "#fd8d3c", "#d94701"], strict=True)
)


def save_figure(figure: Figure, *paths: str | os.PathLike) -> None:
    """Write the figure to every path (format from the suffix), atomically."""
    for path in paths:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(figure)


def final_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's last (highest-step) revision."""
    last = table.groupby("model")["step"].transform("max")
    return table[table["step"] == last]


def r_vs_size(metrics: pd.DataFrame, column: str = "r_drop_inf") -> Figure:
    """Paper Figure 1: bigram-surprisal r vs kept weights across λ, one curve per model."""
    table = final_checkpoints(metrics[metrics["target"] == "bigram"])
    table = table[table["n_kept"] > 0].sort_values("n_kept")
    archs = sorted(table["arch"].unique())
    figure, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        for model, rows in table[table["arch"] == arch].groupby("model"):
            ax.plot(rows["n_kept"], rows[column], marker="o", label=model)
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
    """Kept weights per layer and block for each model's final-checkpoint bigram subnetworks."""
    table = final_checkpoints(layers[layers["target"] == "bigram"])
    table = table[~table["lam"].isin(["full", "empty"])]
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
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
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

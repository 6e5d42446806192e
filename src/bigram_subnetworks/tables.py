"""Tidy tables of the pipeline's results, for the collect rules and the figures: identity
columns first, grid order, and means with 95% confidence intervals across seeds; every bigram r
beside the references it is read against (docs/method.md §6).

Nothing here imports torch or transformers: the table-collecting jobs stay cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

IDENTITY_COLUMNS = [
    "model",
    "arch",
    "revision",
    "checkpoint",
    "step",
    "target",
    "lam",
    "lam_value",
    "seed",
]
LEADING_METRICS = ["n_kept", "n_total", "kept_fraction", "r_drop_inf", "r_clip_inf", "xent_bigram"]
# The correlations of a surprisal with the bigram table's (`evaluation.STATISTICS`), each with its
# standard error `<statistic>_se`.
STATISTICS = ("r_drop_inf", "r_clip_inf", "rho_drop_inf", "rho_clip_inf")
# What each is read against: predictors of the bigram table (`references.PREDICTORS`), and the
# model itself at the same checkpoint, whole (the `full` sentinel mask) and fed the current token
# alone (rule `context_free`).
TABLE_REFERENCES = ("floor", "generalizing", "copy")
MODEL_REFERENCES = ("full", "context_free")
REFERENCE_KEYS = ["model", "revision"]
REFERENCE_COLUMNS = [
    f"{reference}_{statistic}"
    for statistic in STATISTICS
    for reference in (*TABLE_REFERENCES, *MODEL_REFERENCES)
]


def checkpoint_columns(
    table: pd.DataFrame, revisions: Mapping[str, Sequence[str]] | None = None
) -> dict[str, pd.Series]:
    """`step`: the training step of revisions named `step<N>` (pretrained here, or Pythia's
    branches), missing for others (`main`, tags, commits); `checkpoint`: the revision's position
    in its model's configured revisions (the last is the final model), or the step's rank."""
    step = pd.to_numeric(table["revision"].str.extract(r"^step(\d+)$")[0]).astype("Int64")
    if revisions is None:
        checkpoint = step.groupby(table["model"]).rank(method="dense") - 1
    else:
        checkpoint = pd.Series(
            [
                list(revisions[m]).index(r)
                for m, r in zip(table["model"], table["revision"], strict=True)
            ],
            index=table.index,
        )
    return {"step": step, "checkpoint": checkpoint.astype(int)}


def tidy(
    table: pd.DataFrame,
    archs: dict[str, str],
    order: list[str] | None = None,
    revisions: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Identity columns first (model … seed, those present), then ``order``'s leading columns,
    rows sorted in grid order (checkpoint, λ by value where known, then seed)."""
    table = table.assign(**checkpoint_columns(table, revisions), arch=table["model"].map(archs))
    if "lam" in table:
        table["lam"] = table["lam"].astype(str)
    identity = [c for c in IDENTITY_COLUMNS if c in table.columns]
    leading = identity + [c for c in (order or []) if c in table.columns]
    table = table[leading + [c for c in table.columns if c not in leading]]
    keys = [c for c in ("model", "checkpoint", "target", "lam_value", "lam", "seed") if c in table]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def _statistics(values: Mapping) -> dict[str, float]:
    """Every statistic and its standard error from a metrics mapping (NaN where absent)."""
    names = [*STATISTICS, *(f"{name}_se" for name in STATISTICS)]
    return {name: float(values.get(name, np.nan)) for name in names}


def reference_rows(
    metrics: pd.DataFrame,
    references: Mapping[str, Mapping[str, Mapping[str, float]]],
    context_free: Sequence[Mapping],
    tokenizers: Mapping[str, str],
) -> pd.DataFrame:
    """One row per model × revision of ``metrics`` × reference predictor: floor, generalizing
    and copy of the model's tokenizer's table (``references``: tokenizer → predictor →
    statistics), the full model (its `full` bigram sentinel mask, where ``metrics`` has one) and
    the model fed the current token alone (``context_free``: mappings with model and revision),
    each with every statistic and its standard error."""
    cells = metrics[REFERENCE_KEYS].drop_duplicates()
    rows = [
        {"model": model, "revision": revision, "tokenizer": tokenizers[model],
         "predictor": predictor, **_statistics(references[tokenizers[model]][predictor])}
        for model, revision in cells.itertuples(index=False)
        for predictor in TABLE_REFERENCES
    ]  # fmt: skip
    full = metrics[(metrics["target"] == "bigram") & (metrics["lam"] == "full")]
    full = full.sort_values("seed").drop_duplicates(REFERENCE_KEYS)  # made for the first seed
    for source, predictor in ((full.to_dict("records"), "full"), (context_free, "context_free")):
        rows += [
            {"model": row["model"], "revision": row["revision"],
             "tokenizer": tokenizers[row["model"]], "predictor": predictor, **_statistics(row)}
            for row in source
        ]  # fmt: skip
    return pd.DataFrame(rows)


def with_references(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``table`` with, for its model × revision, every reference's value of each statistic
    (`<reference>_<statistic>`, from `reference_rows`) and the position of its own value between
    them: `<statistic>_position` = (value − floor) / (copy − floor), 0 at the floor and 1 at the
    copy reference; `<statistic>_position_generalizing` = (value − floor) / (generalizing −
    floor), 1 at the generalizing reference."""
    wide = rows.set_index([*REFERENCE_KEYS, "predictor"])[list(STATISTICS)].unstack("predictor")
    wide.columns = [f"{predictor}_{statistic}" for statistic, predictor in wide.columns]
    wide = wide.reindex(columns=REFERENCE_COLUMNS).reset_index()
    table = table.merge(wide, on=REFERENCE_KEYS, how="left", validate="many_to_one")
    for statistic in STATISTICS:
        floor = table[f"floor_{statistic}"]
        above = table.get(statistic, np.nan) - floor
        table[f"{statistic}_position"] = above / (table[f"copy_{statistic}"] - floor)
        table[f"{statistic}_position_generalizing"] = above / (
            table[f"generalizing_{statistic}"] - floor
        )
    return table


def collect_tables(
    metrics: list[dict],
    layers: list[pd.DataFrame],
    archs: dict[str, str],
    revisions: Mapping[str, Sequence[str]] | None = None,
    references: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    context_free: Sequence[Mapping] = (),
    tokenizers: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tidy metrics (one row per mask), their mean and 95% CI across seeds (one row per
    model × checkpoint × target × λ), kept-per-block (one row per mask × layer × block), and
    with ``references`` (per tokenizer; ``tokenizers``: model → tokenizer) the references of
    every model × checkpoint (`reference_rows`, with their positions; else empty). The metrics
    and their summary then carry every reference and each statistic's position between them
    (`with_references`; in the summary, the position of the mean over seeds)."""
    metrics_table = tidy(pd.DataFrame(metrics), archs, LEADING_METRICS, revisions)
    keys = ["model", "arch", "revision", "checkpoint", "step", "target", "lam"]
    numeric = metrics_table.select_dtypes("number").columns
    values = [c for c in numeric if c not in keys and c != "seed"]
    summary = summarize_seeds(metrics_table, keys, values)
    for flag in ("stable", "converged"):  # how many seeds' masks passed (docs/method.md §4)
        if flag in metrics_table:
            counts = metrics_table.groupby(keys, sort=False, dropna=False)[flag].sum()
            summary[f"n_{flag}"] = counts.astype(int).to_numpy()
    layers_table = tidy(pd.concat(layers, ignore_index=True), archs, revisions=revisions)
    layers_table = layers_table.sort_values(
        ["model", "checkpoint", "target", "lam_value", "seed", "layer", "block"], kind="stable"
    ).reset_index(drop=True)
    if references is None:
        return metrics_table, summary, layers_table, pd.DataFrame()
    rows = reference_rows(metrics_table, references, context_free, tokenizers)
    reference_table = with_references(rows, rows).drop(columns=REFERENCE_COLUMNS)
    return (
        with_references(metrics_table, rows),
        with_references(summary, rows),
        layers_table,
        tidy(reference_table, archs, revisions=revisions),
    )


def summarize_seeds(table: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Mean over seeds and its 95% confidence interval (Student's t, n − 1 degrees of freedom)
    for each ``values`` column, per ``keys`` group; the interval is NaN for a single seed."""
    import scipy.stats  # ~1 s to import: only the table-collecting jobs need it

    groups = table.groupby(keys, sort=False, dropna=False)
    summary = groups.size().rename("n_seeds").reset_index()
    for column in values:
        stats = groups[column].agg(["mean", "std", "count"]).reset_index(drop=True)
        half = scipy.stats.t.ppf(0.975, stats["count"] - 1) * stats["std"] / np.sqrt(stats["count"])
        summary[column] = stats["mean"]
        summary[f"{column}_ci_low"] = stats["mean"] - half
        summary[f"{column}_ci_high"] = stats["mean"] + half
    return summary


def dynamics(metrics: pd.DataFrame, layers: pd.DataFrame, lambdas: list[str]) -> pd.DataFrame:
    """Bigram subnetworks across pretraining checkpoints (one row per model × step × λ × seed):
    bigram r, size, and the share of the kept weights in the first MLP layer (layer 0's mlp_in
    and mlp_out), the paper's "concentrated in the first MLP layer … throughout pretraining"."""
    keys = ["model", "arch", "revision", "checkpoint", "step", "target", "lam", "seed"]
    chosen = metrics[(metrics["target"] == "bigram") & metrics["lam"].isin(lambdas)]
    first_mlp = layers[(layers["layer"] == 0) & layers["block"].isin(["mlp_in", "mlp_out"])]
    first_mlp = first_mlp.groupby(keys, as_index=False, dropna=False)["n_kept"].sum()
    table = chosen.merge(first_mlp.rename(columns={"n_kept": "first_mlp_kept"}), on=keys)
    table["first_mlp_share"] = table["first_mlp_kept"] / table["n_kept"].where(table["n_kept"] > 0)
    columns = [*keys, "n_kept", "kept_fraction", "r_drop_inf", "r_clip_inf", "xent_bigram"]
    table = table[[*columns, "first_mlp_kept", "first_mlp_share"]]
    order = ["model", "lam", "seed", "checkpoint"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def training_curves(
    histories: Sequence[pd.DataFrame], identities: Sequence[Mapping]
) -> pd.DataFrame:
    """Every mask's `history.tsv` (one row per attempt × step) with the mask's identity columns
    (model, revision, target, lam, lam_value, seed), in one tidy table; sentinel masks, which are
    not trained, have no rows."""
    frames = [
        history.assign(**identity) for history, identity in zip(histories, identities, strict=True)
        if len(history)
    ]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

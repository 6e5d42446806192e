"""How bigram-like and how large a subnetwork is (paper-spec §5).

Surprisals are in bits and cover tokens 1..T-1 of each eval sequence (the first token has no
context). Pearson r against the bigram surprisal comes in the reference's two variants: ±inf
clipped to the largest finite value ("clip-inf"), and tokens with infinite bigram surprisal dropped
("drop-inf"). Both use the same model distribution: logits truncated to the tokenizer's vocabulary
(the reference mixed 50,277 and 50,304 columns between them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .architectures import iter_blocks
from .bigrams import BigramModel
from .masking import Mask, apply_mask, forward_with, masked_parameters
from .targets import BigramTarget, Target, truncate_logits

log = logging.getLogger(__name__)

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalOutputs:
    """Per-token surprisal (bits, [n, T-1]), mean eval loss (nats), and the mean CE (nats)
    against each requested target. With ``compare_full``, also the unmasked model's surprisal and
    the CE of the subnetwork's distribution against the unmasked model's (``xent_full``)."""

    surprisal: np.ndarray
    eval_loss: float
    xents: dict[str, float]
    full_surprisal: np.ndarray | None = None
    xent_full: float | None = None


def _next_token_bits(log_q: torch.Tensor, ids: torch.Tensor) -> np.ndarray:
    """−log2 q(w_{t+1}) at positions 0..T-2, from log-probabilities of every position."""
    nats = -log_q[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (nats / LN2).cpu().numpy()


@torch.no_grad()
def run_model(
    model: nn.Module,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    targets: Mapping[str, Target] | None = None,
    mask: Mask | None = None,
    compare_full: bool = False,
) -> EvalOutputs:
    """Surprisal of every next token, and the CE against each of ``targets``.

    With ``mask``, the subnetwork runs by parameter substitution: W ⊙ m is formed once, and the
    model itself is never modified. One log-softmax per batch serves the surprisal and every
    target. ``compare_full`` also runs the unmasked model on each batch (paper-spec §4 fidelity).
    """
    device = next(model.parameters()).device
    targets = dict(targets or {})
    parameters = None
    if mask is not None:
        mask.check_matches(model)
        parameters = masked_parameters(model, mask.tensors)

    def log_probs(ids: torch.Tensor, params: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        output = (
            model(input_ids=ids) if params is None else forward_with(model, params, input_ids=ids)
        )
        return F.log_softmax(truncate_logits(output.logits, vocab_size).float(), dim=-1)

    was_training = model.training
    model.eval()
    surprisals, full_surprisals = [], []
    sums = dict.fromkeys(targets, 0.0)
    full_sum = 0.0
    try:
        for start in range(0, len(tokens), batch_size):
            ids = torch.from_numpy(np.asarray(tokens[start : start + batch_size], np.int64))
            ids = ids.to(device)
            log_q = log_probs(ids, parameters)
            surprisals.append(_next_token_bits(log_q, ids))
            for name, target in targets.items():
                sums[name] += float(target.cross_entropy_log_probs(log_q, ids)) * ids.shape[0]
            if compare_full:
                log_p = log_q if parameters is None else log_probs(ids, None)
                full_surprisals.append(_next_token_bits(log_p, ids))
                full_sum += float(-(log_p.exp() * log_q).sum(-1).mean()) * ids.shape[0]
    finally:
        model.train(was_training)
    surprisal = np.concatenate(surprisals)
    xents = {name: total / len(tokens) for name, total in sums.items()}
    return EvalOutputs(
        surprisal,
        float(surprisal.mean() * LN2),
        xents,
        full_surprisal=np.concatenate(full_surprisals) if compare_full else None,
        xent_full=full_sum / len(tokens) if compare_full else None,
    )


def _clip_inf(values: np.ndarray) -> np.ndarray:
    """±inf → the largest finite value (the "clip-inf" variant, §5). NaN stays NaN: it is a
    numerically broken model, not an infinitely surprised one, and must not become a number."""
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 0.0
    return np.where(np.isinf(values), top, values)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN if either side has a NaN, fewer than two values, or no variance."""
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any() or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def bigram_correlations(model_bits: np.ndarray, bigram_bits: np.ndarray) -> dict[str, float]:
    """Pearson r of subnetwork vs bigram surprisal, clip-inf and drop-inf variants (§5).

    A NaN model surprisal makes both r NaN, with a warning: a plausible r computed around it (or,
    for drop-inf, with it silently dropped) would hide a broken subnetwork.
    """
    model_bits, bigram_bits = model_bits.ravel(), bigram_bits.ravel()
    finite = np.isfinite(bigram_bits)
    r = {"r_clip_inf": float("nan"), "r_drop_inf": float("nan")}
    n_nan = int(np.isnan(model_bits).sum())
    if n_nan:
        log.warning(
            "%d of %d tokens have a NaN model surprisal: r_clip_inf and r_drop_inf are NaN",
            n_nan,
            model_bits.size,
        )
    else:
        model_clipped = _clip_inf(model_bits)
        r["r_clip_inf"] = pearson(model_clipped, _clip_inf(bigram_bits))
        r["r_drop_inf"] = pearson(model_clipped[finite], bigram_bits[finite])
    return {**r, "fraction_inf_bigram": float(1.0 - finite.mean())}


def evaluate_mask(
    model: nn.Module,
    mask: Mask,
    tokens: np.ndarray,
    bigrams: BigramModel,
    batch_size: int,
    fidelity: bool = False,
) -> dict[str, float]:
    """All scalar metrics of one subnetwork on the eval split.

    With ``fidelity`` (optimal subnetworks, paper-spec §4), also how closely it reproduces the
    full model: Pearson r of its surprisal against the full model's (±inf clipped), and the CE
    of its distribution against the full model's (nats; equals the full model's entropy for an
    all-kept mask).
    """
    device = next(model.parameters()).device
    targets = {"bigram": BigramTarget(bigrams, device=device)}
    outputs = run_model(
        model, tokens, bigrams.vocab_size, batch_size, targets, mask, compare_full=fidelity
    )
    metrics = {
        "n_kept": mask.n_kept,
        "n_total": mask.n_total,
        "kept_fraction": mask.density,
        **bigram_correlations(outputs.surprisal, bigrams.surprisal(tokens)),
        "xent_bigram": outputs.xents["bigram"],
        "eval_loss": outputs.eval_loss,
        "mean_surprisal_bits": float(outputs.surprisal.mean()),
    }
    if fidelity:
        metrics["r_full"] = pearson(
            _clip_inf(outputs.surprisal.ravel()), _clip_inf(outputs.full_surprisal.ravel())
        )
        metrics["xent_full"] = outputs.xent_full
    return metrics


def kept_by_block(model: nn.Module, mask: Mask, per_head: bool = False) -> pd.DataFrame:
    """Kept and total weights per layer and block (attn_q/k/v/o per head, mlp_in/out)."""
    rows = []
    for name, piece in iter_blocks(model):
        block = mask.tensors[name][piece.rows, piece.cols]
        rows.append((piece.layer, piece.block, piece.head, int(block.sum()), block.numel()))
    table = pd.DataFrame(rows, columns=["layer", "block", "head", "n_kept", "n_total"])
    keys = ["layer", "block", "head"] if per_head else ["layer", "block"]
    table = table.groupby(keys, sort=True, dropna=False)[["n_kept", "n_total"]].sum().reset_index()
    table["kept_fraction"] = table["n_kept"] / table["n_total"]
    return table


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


def collect_tables(
    metrics: list[dict],
    layers: list[pd.DataFrame],
    archs: dict[str, str],
    revisions: Mapping[str, Sequence[str]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tidy metrics (one row per mask), their mean and 95% CI across seeds (one row per
    model × checkpoint × target × λ), and kept-per-block (one row per mask × layer × block)."""
    metrics_table = tidy(pd.DataFrame(metrics), archs, LEADING_METRICS, revisions)
    keys = ["model", "arch", "revision", "checkpoint", "step", "target", "lam"]
    numeric = metrics_table.select_dtypes("number").columns
    values = [c for c in numeric if c not in keys and c != "seed"]
    summary = summarize_seeds(metrics_table, keys, values)
    layers_table = tidy(pd.concat(layers, ignore_index=True), archs, revisions=revisions)
    layers_table = layers_table.sort_values(
        ["model", "checkpoint", "target", "lam_value", "seed", "layer", "block"], kind="stable"
    )
    return metrics_table, summary, layers_table.reset_index(drop=True)


# Paper-spec §5: necessity and sufficiency. The random control keeps as many weights as the
# subnetwork in every matrix, at uniformly random positions.
ABLATION_CONDITIONS = (
    "full",
    "subnetwork",
    "random",
    "full_minus_subnetwork",
    "full_minus_random",
)


def ablation_masks(mask: Mask, seed: int) -> dict[str, Mask]:
    """The five conditions of the ablation study as masks over the same weights."""
    random = mask.shuffled(torch.Generator().manual_seed(seed))
    return {
        "full": Mask.full(mask.shapes),
        "subnetwork": mask,
        "random": random,
        "full_minus_subnetwork": ~mask,
        "full_minus_random": ~random,
    }


def ablation(
    model: nn.Module,
    mask: Mask,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    seed: int,
) -> pd.DataFrame:
    """Mean ± std per-token surprisal (bits) on the eval split for each condition."""
    rows = []
    for condition, condition_mask in ablation_masks(mask, seed).items():
        outputs = run_model(model, tokens, vocab_size, batch_size, mask=condition_mask)
        bits = outputs.surprisal.ravel()
        rows.append(
            {
                "condition": condition,
                "n_kept": condition_mask.n_kept,
                "kept_fraction": condition_mask.density,
                "mean_surprisal_bits": float(bits.mean()),
                "std_surprisal_bits": float(bits.std()),
                "n_tokens": bits.size,
            }
        )
    return pd.DataFrame(rows)


def max_positions(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "max_position_embeddings", None) or config.n_positions)


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer,
    prompt: str,
    temperature: float,
    max_new_tokens: int,
    samples: int,
    seed: int,
) -> list[str]:
    """Sampled continuations of ``prompt``: probabilities ∝ p^(1/temperature), no top-k or
    top-p cut (the paper's sampler), never a padded logit column, stopping early at EOS."""
    device = next(model.parameters()).device
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
    if ids.shape[1] + max_new_tokens > max_positions(model):
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's {max_positions(model)} positions"
        )
    padded = range(len(tokenizer), model.get_output_embeddings().weight.shape[0])
    torch.manual_seed(seed)
    out = model.generate(
        ids.expand(samples, -1),
        attention_mask=torch.ones(samples, ids.shape[1], dtype=torch.long, device=device),
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        suppress_tokens=list(padded) or None,
        pad_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def generations(
    model: nn.Module,
    tokenizer,
    mask: Mask,
    seed: int,
    prompt: str,
    temperature: float,
    max_new_tokens: int,
    samples: int,
) -> pd.DataFrame:
    """Generated text for every ablation condition (same sampling seed for each)."""
    rows = []
    for condition, condition_mask in ablation_masks(mask, seed).items():
        with apply_mask(model, condition_mask):
            texts = generate(model, tokenizer, prompt, temperature, max_new_tokens, samples, seed)
        rows += [
            {"condition": condition, "sample": i, "prompt": prompt, "text": text}
            for i, text in enumerate(texts)
        ]
    return pd.DataFrame(rows)


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

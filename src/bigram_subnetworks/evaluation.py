"""How bigram-like and how large a subnetwork is (paper-spec §5).

Surprisals are in bits and cover tokens 1..T-1 of each eval sequence (the first token has no
context). Pearson r against the bigram surprisal comes in the reference's two variants: ±inf
clipped to the largest finite value ("clip-inf"), and tokens with infinite bigram surprisal dropped
("drop-inf"). Both use the same model distribution: logits truncated to the tokenizer's vocabulary
(the reference mixed 50,277 and 50,304 columns between them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .architectures import iter_blocks
from .bigrams import BigramModel
from .masking import Mask, apply_mask
from .targets import BigramTarget, truncate_logits

LN2 = math.log(2.0)


@dataclass(frozen=True)
class EvalOutputs:
    """Per-token surprisal (bits, [n, T-1]), and mean CEs (nats) over the evaluated tokens."""

    surprisal: np.ndarray
    eval_loss: float
    xent_bigram: float | None


@torch.no_grad()
def run_model(
    model: nn.Module,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    target: BigramTarget | None = None,
) -> EvalOutputs:
    """Surprisal of every next token, and (with ``target``) the CE against the bigram rows."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    surprisals, xents = [], []
    try:
        for start in range(0, len(tokens), batch_size):
            ids = torch.from_numpy(np.asarray(tokens[start : start + batch_size], np.int64))
            ids = ids.to(device)
            logits = truncate_logits(model(input_ids=ids).logits, vocab_size).float()
            log_q = F.log_softmax(logits[:, :-1], dim=-1)
            nats = -log_q.gather(-1, ids[:, 1:, None]).squeeze(-1)
            surprisals.append((nats / LN2).cpu().numpy())
            if target is not None:
                xents.append(float(target.cross_entropy(logits, ids)) * ids.shape[0])
    finally:
        model.train(was_training)
    surprisal = np.concatenate(surprisals)
    xent = sum(xents) / len(tokens) if target is not None else None
    return EvalOutputs(surprisal, float(surprisal.mean() * LN2), xent)


def _clip_inf(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    top = finite.max() if finite.size else 0.0
    return np.where(np.isfinite(values), values, top)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def bigram_correlations(model_bits: np.ndarray, bigram_bits: np.ndarray) -> dict[str, float]:
    """Pearson r of subnetwork vs bigram surprisal, clip-inf and drop-inf variants."""
    model_bits, bigram_bits = model_bits.ravel(), bigram_bits.ravel()
    model_clipped = _clip_inf(model_bits)
    finite = np.isfinite(bigram_bits)
    return {
        "r_clip_inf": pearson(model_clipped, _clip_inf(bigram_bits)),
        "r_drop_inf": pearson(model_clipped[finite], bigram_bits[finite]),
        "fraction_inf_bigram": float(1.0 - finite.mean()),
    }


def evaluate_mask(
    model: nn.Module, mask: Mask, tokens: np.ndarray, bigrams: BigramModel, batch_size: int
) -> dict[str, float]:
    """All scalar metrics of one subnetwork on the eval split."""
    device = next(model.parameters()).device
    target = BigramTarget(bigrams, device=device)
    with apply_mask(model, mask):
        outputs = run_model(model, tokens, bigrams.vocab_size, batch_size, target)
    metrics = bigram_correlations(outputs.surprisal, bigrams.surprisal(tokens))
    return {
        "n_kept": mask.n_kept,
        "n_total": mask.n_total,
        "kept_fraction": mask.density,
        **metrics,
        "xent_bigram": outputs.xent_bigram,
        "eval_loss": outputs.eval_loss,
        "mean_surprisal_bits": float(outputs.surprisal.mean()),
    }


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


IDENTITY_COLUMNS = ["model", "arch", "revision", "step", "target", "lam", "lam_value"]
LEADING_METRICS = ["n_kept", "n_total", "kept_fraction", "r_drop_inf", "r_clip_inf", "xent_bigram"]


def _tidy(table: pd.DataFrame, archs: dict[str, str]) -> pd.DataFrame:
    """Identity columns first (model … λ), rows in grid order."""
    table = table.assign(
        lam=table["lam"].astype(str),
        step=table["revision"].str.removeprefix("step").astype(int),
        arch=table["model"].map(archs),
    )
    leading = IDENTITY_COLUMNS + [c for c in LEADING_METRICS if c in table.columns]
    table = table[leading + [c for c in table.columns if c not in leading]]
    return table.sort_values(["model", "step", "target", "lam_value"], kind="stable")


def collect_tables(
    metrics: list[dict], layers: list[pd.DataFrame], archs: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics (one row per mask) and kept-per-block (one row per mask × layer × block)."""
    metrics_table = _tidy(pd.DataFrame(metrics), archs)
    layers_table = _tidy(pd.concat(layers, ignore_index=True), archs)
    layers_table = layers_table.sort_values(
        ["model", "step", "target", "lam_value", "layer", "block"], kind="stable"
    )
    return metrics_table.reset_index(drop=True), layers_table.reset_index(drop=True)

"""Necessity and sufficiency of a subnetwork (docs/method.md §9): eval surprisal of the full
model, the subnetwork, a random subnetwork with as many weights in every matrix, and the full
model minus either; text sampled from each of the five conditions; and the dose-response of
random removal, from a few weights up to the subnetwork's size.

The conditions are mask algebra over the same weights (m, ~m, m.shuffled, ~m.shuffled), run
through `evaluation.run_model` (parameter substitution) or, for generation, `apply_mask`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .evaluation import run_model
from .masking import Mask, apply_mask

log = logging.getLogger(__name__)

# Necessity and sufficiency (docs/method.md §9). The random control keeps as many weights as the
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
    random = mask.shuffled(_control_generator(seed))
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
        scores = _surprisal(model, condition_mask, tokens, vocab_size, batch_size, condition)
        rows.append(
            {
                "condition": condition,
                "n_kept": condition_mask.n_kept,
                "kept_fraction": condition_mask.density,
                **scores,
            }
        )
    return pd.DataFrame(rows)


def _control_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _surprisal(
    model: nn.Module, mask: Mask, tokens: np.ndarray, vocab_size: int, batch_size: int, what: str
) -> dict[str, float | int]:
    """Mean and std of the per-token eval surprisal (bits) of the model under ``mask``."""
    outputs = run_model(model, tokens, vocab_size, batch_size, mask=mask, what=f"ablation {what}")
    bits = outputs.surprisal.ravel()
    return {
        "mean_surprisal_bits": float(bits.mean()),
        "std_surprisal_bits": float(bits.std()),
        "n_tokens": bits.size,
    }


# The dose-response's rows (docs/method.md §9): the full model (nothing removed), random removal
# at each size, and the subnetwork's own removal.
REMOVALS = ("none", "random", "subnetwork")


def removal_sizes(n_total: int, n_subnetwork: int, points: int, min_fraction: float) -> list[int]:
    """How many weights the random removals of the dose-response remove: ``points`` sizes
    log-spaced from ``min_fraction`` of the ``n_total`` maskable weights (at least one) up to the
    subnetwork's size, rounded, distinct and increasing; the last is always the subnetwork's size.
    A subnetwork no larger than the smallest size gets that one size only; an empty one none."""
    if points < 2:
        raise ValueError(f"points must be ≥ 2, got {points}")
    if not 0 < min_fraction < 1:
        raise ValueError(f"min_fraction must be in (0, 1), got {min_fraction}")
    if n_subnetwork == 0:
        return []
    smallest = max(1, round(min_fraction * n_total))
    if smallest >= n_subnetwork:
        return [n_subnetwork]
    sizes = np.unique(np.rint(np.geomspace(smallest, n_subnetwork, points)).astype(np.int64))
    return [int(size) for size in sizes]


def random_removals(mask: Mask, sizes: Sequence[int], seed: int) -> Iterator[tuple[int, Mask]]:
    """(size, keep-mask of the full model minus ``size`` random weights) for each size, one mask
    at a time (each is as large as the model's maskable weights).

    The removals are nested prefixes of one random order of the weights the random same-count
    subnetwork of `ablation_masks` keeps (``seed``'s; its generator goes on to draw the order):
    each removes what the smaller ones do and more, so the curve is not blurred by independent
    draws, and the removal at the subnetwork's size is exactly the ``full_minus_random``
    condition. A smaller removal takes its weights from each matrix in proportion to the
    subnetwork's counts there, up to sampling (a uniform subset of the random subnetwork).
    """
    generator = _control_generator(seed)
    random = mask.shuffled(generator)
    names = list(random.tensors)
    flat = torch.cat([random.tensors[name].flatten() for name in names])
    kept = torch.nonzero(flat).squeeze(1)
    order = kept[torch.randperm(len(kept), generator=generator)]
    del flat, kept
    bounds = np.cumsum([0, *(random.tensors[name].numel() for name in names)])
    for size in sizes:
        if not 0 <= size <= len(order):
            raise ValueError(
                f"cannot remove {size} of the random subnetwork's {len(order)} weights"
            )
        keep = torch.ones(int(bounds[-1]), dtype=torch.bool)
        keep[order[:size]] = False
        yield (
            size,
            Mask(
                {
                    name: keep[lo:hi].view(random.tensors[name].shape)
                    for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)
                }
            ),
        )


def dose_response(
    model: nn.Module,
    mask: Mask,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    seed: int,
    *,
    points: int,
    min_fraction: float,
    conditions: pd.DataFrame,
) -> pd.DataFrame:
    """Eval surprisal (bits) of the full model minus random weights, at each of `removal_sizes`,
    beside the full model and the full model minus the subnetwork (docs/method.md §9): the
    subnetwork's removal read against random removal at its own size and at smaller ones.

    ``conditions`` is `ablation`'s table of the same mask, seed and tokens. Its ``full`` and
    ``full_minus_subnetwork`` rows are the ``none`` and ``subnetwork`` rows here, and its
    ``full_minus_random`` row is the random removal at the subnetwork's size (`random_removals`
    makes the same mask), so nothing is evaluated twice. One row per removal, columns
    ``removal`` (`REMOVALS`), ``n_removed``, ``fraction_removed`` (of the maskable weights),
    ``mean_surprisal_bits``, ``std_surprisal_bits``, ``n_tokens``; by removal, then size.
    """
    n_total, n_subnetwork = mask.n_total, mask.n_kept
    reused = conditions.set_index("condition")
    if reused.loc["full_minus_random", "n_kept"] != n_total - n_subnetwork:
        raise ValueError("the ablation table is not of this mask")

    def row(removal: str, n_removed: int, scores) -> dict:
        return {
            "removal": removal,
            "n_removed": n_removed,
            "fraction_removed": n_removed / n_total,
            "mean_surprisal_bits": float(scores["mean_surprisal_bits"]),
            "std_surprisal_bits": float(scores["std_surprisal_bits"]),
            "n_tokens": int(scores["n_tokens"]),
        }

    rows = [row("none", 0, reused.loc["full"])]
    sizes = removal_sizes(n_total, n_subnetwork, points, min_fraction)
    log.info("dose-response: random removal of %s weights", sizes)
    for size, keep in random_removals(mask, sizes[:-1], seed):
        what = f"random removal of {size} weights"
        rows.append(
            row("random", size, _surprisal(model, keep, tokens, vocab_size, batch_size, what))
        )
    if sizes:
        rows.append(row("random", n_subnetwork, reused.loc["full_minus_random"]))
    rows.append(row("subnetwork", n_subnetwork, reused.loc["full_minus_subnetwork"]))
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
    texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return [plain_lines(text) for text in texts]


def plain_lines(text: str) -> str:
    """``text`` with every line break a newline: a bare carriage return (which byte-level BPE
    can decode to) is not quoted by the CSV writer and would split a row of the TSV table."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


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

"""Necessity and sufficiency of a subnetwork (docs/method.md §9): eval surprisal of the full
model, the subnetwork, a random subnetwork with as many weights in every matrix, and the full
model minus either; and text sampled from each of the five conditions.

The conditions are mask algebra over the same weights (m, ~m, m.shuffled, ~m.shuffled), run
through `evaluation.run_model` (parameter substitution) or, for generation, `apply_mask`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .evaluation import run_model
from .masking import Mask, apply_mask

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
        outputs = run_model(
            model, tokens, vocab_size, batch_size, mask=condition_mask, what=f"ablation {condition}"
        )
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

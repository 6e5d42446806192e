"""Cost of one mask-training step: plain fine-tuning vs ours vs the paper's NeuroSurgeon approach.

Tiny random GPT-NeoX (hidden 256, 4 layers, 4 heads, ff 1024), batch 16 x 128, CPU, 2 threads, at
vocab 4,096 and 50,304 (Pythia's logit count). Bigram counts come from a synthetic Zipf stream.
  plain  all weights trainable, AdamW, CE on the next tokens.
  ours   `training._step` (soft masks, `masked_forward`, sparse `BigramTarget`, AdamW on the scores)
         plus the per-step early-stop count, as `train_attempt` does every step.
  ref    NeuroSurgeon 0.1.0 `CircuitModel` configured as the paper's `train_circuit`, a dense
         float64 [batch, seq, V] bigram target filled on the CPU from per-context rows
         (`NGramModel`-style: top-10,000 contexts as dense rows, the rest as dicts), soft-target
         CrossEntropyLoss + λ·Σσ/|M|, AdamW, then the undecided count and temperature update.
Why: DESIGN "a masked step costs close to a plain fine-tuning step" and "no dense targets".
"""

from __future__ import annotations

import copy
import gc

import numpy as np
import torch
import torch.nn.functional as F
from _common import (
    QUICK,
    emit,
    interleaved,
    log,
    mask_config,
    median,
    setup,
    tiny_neox,
    zipf_tokens,
)
from NeuroSurgeon.Masking.mask_layer import MaskLayer
from NeuroSurgeon.Models.circuit_model import CircuitModel
from NeuroSurgeon.Models.model_configs import CircuitConfig

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import ContinuousSparsification
from bigram_subnetworks.targets import BigramTarget
from bigram_subnetworks.training import _step

BATCH, SEQ, LAM, LR = 16, 128, 10.0, 5e-5
N_SEQUENCES = 1_600 if QUICK else 16_000  # 0.2M or 2.05M tokens
REPS = {4096: 2 if QUICK else 15, 50304: 2 if QUICK else 8}
CPU = torch.device("cpu")


def reference_rows(bigrams: BigramModel, array_topk: int = 10_000) -> dict:
    """(context,) → {next: prob}; the contexts with most continuations as dense float64 rows."""
    probs = bigrams.probs
    rows = {}
    for u in np.flatnonzero(bigrams.seen):
        start, end = probs.indptr[u], probs.indptr[u + 1]
        nexts, values = probs.indices[start:end].tolist(), probs.data[start:end].tolist()
        rows[(int(u),)] = dict(zip(nexts, values, strict=True))
    for key in sorted(rows, key=lambda k: len(rows[k]), reverse=True)[:array_topk]:
        dense = np.zeros(bigrams.vocab_size)
        dense[list(rows[key])] = list(rows[key].values())
        rows[key] = dense
    return rows


def reference_target(ids: np.ndarray, rows: dict, backoff: np.ndarray) -> np.ndarray:
    """Dense [batch, seq, V] float64 P(next | current token), filled position by position."""
    out = np.zeros((*ids.shape, len(backoff)))
    for i, sequence in enumerate(ids.tolist()):
        for t, token in enumerate(sequence):
            row = rows.get((token,))
            if row is None:
                out[i, t] = backoff
            elif isinstance(row, np.ndarray):
                out[i, t] = row
            else:
                for v, p in row.items():
                    out[i, t, v] = p
    return out


def plain_step(model, optimizer, ids: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()


def reference_step(circuit, optimizer, batch: np.ndarray, rows, backoff, n_trainable) -> None:
    input_ids = torch.Tensor(batch).int()
    logits = circuit(input_ids=input_ids).logits
    target_probs = torch.Tensor(reference_target(batch, rows, backoff))
    xent = torch.nn.CrossEntropyLoss()(logits.transpose(-1, 1), target_probs.transpose(-1, 1))
    loss = xent + (1.0 / n_trainable) * LAM * circuit._compute_l0_loss()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    n_below = n_above = 0
    for layer in circuit.wrapped_model.modules():
        if isinstance(layer, MaskLayer):
            soft = layer._compute_mask("weight_mask_params")
            n_below += torch.sum(soft < 0.1).item()
            n_above += torch.sum(soft > 0.9).item()
    circuit.temperature = circuit.temperature * 1.001


def measure(vocab: int) -> dict[str, float]:
    """Median seconds per step of plain / ours / ref at one vocabulary size."""
    tokens = zipf_tokens(N_SEQUENCES * SEQ, vocab).reshape(-1, SEQ)
    bigrams = BigramModel(BigramCounts.count(tokens, vocab))
    batch = tokens[:BATCH].astype(np.int64)
    ids = torch.from_numpy(batch)

    base = tiny_neox(vocab).eval()
    plain, ref = copy.deepcopy(base).train(), copy.deepcopy(base)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=LR)

    for p in base.parameters():
        p.requires_grad_(False)
    cs = ContinuousSparsification(maskable_parameters(base))
    ours_opt = torch.optim.AdamW(cs.parameters(), lr=LR, weight_decay=0.01)
    cfg = mask_config(BATCH, LAM, LR)
    target = BigramTarget(bigrams, device=CPU)

    layers = [name.removesuffix(".weight") for name in maskable_parameters(ref)]
    config = CircuitConfig(
        mask_method="continuous_sparsification",
        mask_hparams={"ablation": "none", "mask_unit": "weight", "mask_bias": False,
                      "mask_init_value": 0.0},
        target_layers=layers, freeze_base=True, add_l0=False,
    )  # fmt: skip
    circuit = CircuitModel(config, ref)
    ref_opt = torch.optim.AdamW(circuit.parameters(), lr=LR)
    n_trainable = sum(p.numel() for p in circuit.parameters() if p.requires_grad)
    assert n_trainable == cs.numel, (n_trainable, cs.numel)
    log.info(
        "V=%d: %d layers, %d mask logits; building reference rows", vocab, len(layers), n_trainable
    )
    rows, backoff = reference_rows(bigrams), bigrams.backoff_row()

    def ours_step() -> None:
        _step(base, cs, target, ours_opt, batch, cfg, CPU)
        cs.decision_counts()

    times = interleaved(
        {
            "plain": lambda: plain_step(plain, plain_opt, ids),
            "ours": ours_step,
            "ref": lambda: reference_step(circuit, ref_opt, batch, rows, backoff, n_trainable),
        },
        reps=REPS[vocab],
    )
    count_times = interleaved({"count": cs.decision_counts}, reps=5)["count"]
    with torch.no_grad():
        logits = base(input_ids=ids).logits
    target_times = interleaved(
        {
            "ours_target": lambda: target.cross_entropy(logits, ids),
            "ref_target": lambda: reference_target(batch, rows, backoff),
        },
        reps=3,
    )
    result = {name: median(values) for name, values in times.items()}
    result["count"] = median(count_times)
    result.update({name: median(values) for name, values in target_times.items()})
    log.info("V=%d medians (ms): %s", vocab, {k: round(1000 * v, 1) for k, v in result.items()})
    return result


def main() -> None:
    setup()
    small = measure(4096)
    gc.collect()
    large = measure(50304)
    pairs: dict[str, float] = {}
    for vocab, res in ((4096, small), (50304, large)):
        for name in ("plain", "ours", "ref", "count"):
            pairs[f"{name}_ms_v{vocab}"] = 1000 * res[name]
        pairs[f"masked_over_plain_v{vocab}"] = res["ours"] / res["plain"]
    pairs["masked_over_plain"] = small["ours"] / small["plain"]
    pairs["speedup_v4096"] = small["ref"] / small["ours"]
    pairs["speedup_v50304"] = large["ref"] / large["ours"]
    emit(pairs)


if __name__ == "__main__":
    main()

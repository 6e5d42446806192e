"""The paper's mask-training step, re-implemented for benchmarking (no reference code copied).

Follows tylerachang/bigram-subnetworks @ 801d495: `ngram_utils.NGramModel` (probability rows per
context tuple, the 10,000 contexts with most continuations as dense float64 arrays, a dense
[batch, seq, V] target filled position by position with a `np.roll` window, backoff to unigrams
and then uniform) and `circuit_utils.train_circuit` (NeuroSurgeon `CircuitModel`, soft-target
CrossEntropyLoss + λ/|M|·L0, AdamW, the per-step undecided count, temperature ×1.001).
"""

from __future__ import annotations

import numpy as np
import torch
from NeuroSurgeon.Masking.mask_layer import MaskLayer
from NeuroSurgeon.Models.circuit_model import CircuitModel
from NeuroSurgeon.Models.model_configs import CircuitConfig

from bigram_subnetworks.bigrams import BigramModel


class ReferenceNGram:
    """Bigram rows keyed by (context,), the unigram row keyed by (), as `NGramModel` holds them."""

    def __init__(self, bigrams: BigramModel, array_topk: int = 10_000) -> None:
        self.vocab_size = bigrams.vocab_size
        probs = bigrams.probs
        rows: dict = {}
        for u in np.flatnonzero(bigrams.seen):
            start, end = probs.indptr[u], probs.indptr[u + 1]
            nexts, values = probs.indices[start:end].tolist(), probs.data[start:end].tolist()
            rows[(int(u),)] = dict(zip(nexts, values, strict=True))
        for key in sorted(rows, key=lambda k: len(rows[k]), reverse=True)[:array_topk]:
            dense = np.zeros(self.vocab_size)
            dense[list(rows[key])] = list(rows[key].values())
            rows[key] = dense
        self.models = {1: {(): np.asarray(bigrams.unigram, dtype=np.float64)}, 2: rows}

    def _predict(self, sequences, n: int, prefilled: np.ndarray | None) -> np.ndarray:
        rows, vocab = self.models[n], self.vocab_size
        out = np.nan * np.ones((*sequences.shape, vocab)) if prefilled is None else prefilled
        for i, sequence in enumerate(sequences):
            if np.all(~np.isnan(out[i, :, 0])):
                continue
            curr = np.ones(n - 1, dtype=int) * vocab
            for t, token_id in enumerate(sequence):
                curr = np.roll(curr, -1)
                if len(curr) > 0:
                    curr[-1] = token_id
                if not np.isnan(out[i, t, 0]):
                    continue
                row = rows.get(tuple(curr))
                if isinstance(row, dict):
                    out[i, t, :] = 0.0
                    for v, p in row.items():
                        out[i, t, v] = p
                elif row is not None:
                    out[i, t, :] = row
        return out

    def predict(self, sequences) -> np.ndarray:
        """`ngram_predict_with_backoff`: bigram, then unigram for unseen contexts, then 1/V."""
        out, n, has_nan = None, 2, True
        while n > 0 and has_nan:
            out = self._predict(sequences, n, out)
            has_nan, n = bool(np.any(np.isnan(out))), n - 1
        out[np.isnan(out)] = 1.0 / self.vocab_size
        return out

    def predict_lean(self, ids: np.ndarray) -> np.ndarray:
        """The same dense target without the nan bookkeeping and np.roll (a kinder baseline)."""
        out = np.zeros((*ids.shape, self.vocab_size))
        rows, unigram = self.models[2], self.models[1][()]
        for i, sequence in enumerate(ids.tolist()):
            for t, token in enumerate(sequence):
                row = rows.get((token,), unigram)
                if isinstance(row, dict):
                    for v, p in row.items():
                        out[i, t, v] = p
                else:
                    out[i, t] = row
        return out


def circuit_model(model, weight_names) -> CircuitModel:
    """Wrap ``model`` as `train_circuit` does (``add_l0=False``: the L0 term is added by hand)."""
    config = CircuitConfig(
        mask_method="continuous_sparsification",
        mask_hparams={"ablation": "none", "mask_unit": "weight", "mask_bias": False,
                      "mask_init_value": 0.0},
        target_layers=[name.removesuffix(".weight") for name in weight_names],
        freeze_base=True, add_l0=False,
    )  # fmt: skip
    circuit = CircuitModel(config, model)
    circuit.n_trainable = sum(p.numel() for p in circuit.parameters() if p.requires_grad)
    return circuit


def reference_step(circuit, optimizer, batch: np.ndarray, ngram: ReferenceNGram, lam: float):
    """One iteration of `train_circuit`'s loop (grad_acc_steps = 1)."""
    input_ids = torch.Tensor(batch).int()
    logits = circuit(input_ids=input_ids).logits
    target_probs = torch.Tensor(ngram.predict(input_ids))
    xent = torch.nn.CrossEntropyLoss()(logits.transpose(-1, 1), target_probs.transpose(-1, 1))
    loss = xent + (1.0 / circuit.n_trainable) * lam * circuit._compute_l0_loss()
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

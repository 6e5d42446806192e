"""Residual-stream analyses (docs/method.md §10): activations, per-layer ridge lenses, rotations
and the layer × layer covariance similarity and linear CKA.

Activations come from forward pre-hooks on the unmodified Hugging Face model (never a copied
forward). Conditions (full model, bigram subnetwork, complement, random subnetwork) are the caller's
business: wrap the calls in ``masking.apply_mask``. The final LayerNorm and the (un)embeddings are
never maskable, so the lens readouts below use the model's own modules in any masked state.

Memory: `Activations` holds (L+1) float32 [n, d] arrays, 4·(L+1)·n·d bytes, e.g. Pythia-1B
(d = 2048, L + 1 = 17) on 128k tokens is ~17.8 GB per token set, so fit and eval sets together need
~36 GB. `collect_activations(max_tokens=...)` subsamples tokens while collecting. Fitting casts one
layer (and the three targets) to float64 at a time: ~8 GB more at that size. Linear CKA holds up
to L+1 float64 [d, d] cross-products (~0.6 GB at that size) or [1024, 1024] Gram tiles.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.linear_model import Ridge
from torch import nn

from .ablation import ablation_masks
from .architectures import residual_modules, spec_for
from .evaluation import pearson
from .masking import Mask, apply_mask
from .progress import Progress
from .targets import truncate_logits

log = logging.getLogger(__name__)

LN2 = math.log(2.0)
# docs/method.md §10: abort if more than 1% of the tokens have NaN activations.
MAX_NAN_FRACTION = 0.01
RECALL_AT = (1, 5, 10)
MAP_TARGETS = ("in", "out", "secondlast")


@contextmanager
def residual_hooks(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """Capture the residual stream h_0..h_L of every forward pass run in the body.

    Yields a list of L + 1 slots that each forward pass overwrites ([batch, pos, d], detached):
    slot l < L is the input of block l (h_0 = the embedding output, h_l = the output of block
    l − 1), slot L is the input of the final LayerNorm, i.e. the last state *before* the final LN
    (docs/method.md §10). Hugging Face's ``output_hidden_states`` cannot be used: in
    transformers 5 its last entry is after the final LN for both GPT-2 and GPT-NeoX. The
    pre-hooks return None, so the model's outputs are unchanged, and they are removed when the
    body exits, raising or not.
    """
    blocks, norm = residual_modules(model)
    states: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def capture(index: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            states[index] = hidden.detach()

        return hook

    handles = []
    try:
        for index, module in enumerate([*blocks, norm]):
            handles.append(module.register_forward_pre_hook(capture(index), with_kwargs=True))
        yield states
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Activations:
    """Residual-stream states of one model state on a token set, one row per token.

    layers: L + 1 float32 arrays [n, d]; layers[l] is h_l as defined in `residual_hooks`.
    input_ids: [n] the current token. next_ids: [n] the actual next token, -1 at the last position
    of a sequence. surprisal: [n] float32, −log2 p(next token) under the model's own output, NaN
    where there is no next token. sequence, position: [n] where each row came from.
    """

    layers: tuple[np.ndarray, ...]
    input_ids: np.ndarray
    next_ids: np.ndarray
    surprisal: np.ndarray
    sequence: np.ndarray
    position: np.ndarray

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_blocks(self) -> int:
        """L: the index of the last (pre-final-LN) layer."""
        return len(self.layers) - 1

    @property
    def has_next(self) -> np.ndarray:
        return self.next_ids >= 0

    def subset(self, rows: np.ndarray) -> Activations:
        """The given rows (indices or a boolean mask), in every field."""
        return Activations(
            tuple(layer[rows] for layer in self.layers),
            self.input_ids[rows],
            self.next_ids[rows],
            self.surprisal[rows],
            self.sequence[rows],
            self.position[rows],
        )


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    max_tokens: int | None = None,
    seed: int = 0,
) -> Activations:
    """Run ``tokens`` ([n_seq, T] ids) through ``model`` and keep h_0..h_L of every position.

    With ``max_tokens``, a uniform random subset of that many (sequence, position) pairs is kept
    (without replacement, the same rows for every layer), so memory scales with ``max_tokens``.
    The model's own next-token surprisal uses logits truncated to ``vocab_size``. Tokens whose
    activations are not finite in any layer are dropped; more than 1% of them is an error
    (docs/method.md §10; ablated models can overflow).
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    keep = _kept_positions(tokens.shape, max_tokens, seed)
    layers, finite, surprisal = _forward_residuals(model, tokens, keep, vocab_size, batch_size)
    acts = _drop_non_finite(_token_rows(tokens, keep, layers, surprisal), finite)
    n_layers, d = len(layers), layers[0].shape[1]
    log.info("collected %d tokens × %d layers × %d dims", acts.n_tokens, n_layers, d)
    return acts


def _kept_positions(shape: tuple[int, int], max_tokens: int | None, seed: int) -> np.ndarray:
    """[n_seq, T] bool: the (sequence, position) pairs to keep. All of them, or a uniform sample
    of ``max_tokens`` without replacement, drawn before the forward passes so that only the kept
    rows are ever stored."""
    n_seq, seq_len = shape
    total = n_seq * seq_len
    if max_tokens is not None and max_tokens < total:
        rng = np.random.default_rng(seed)
        keep = np.zeros(total, dtype=bool)
        keep[rng.choice(total, size=max_tokens, replace=False)] = True
    else:
        keep = np.ones(total, dtype=bool)
    return keep.reshape(n_seq, seq_len)


@torch.no_grad()
def _forward_residuals(
    model: nn.Module, tokens: np.ndarray, keep: np.ndarray, vocab_size: int, batch_size: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Run ``tokens`` through ``model`` in eval mode (its mode is restored, raising or not).

    Returns h_0..h_L of the kept positions (L + 1 float32 [n_keep, d], rows in row-major order of
    ``keep``), whether each kept row is finite in every layer ([n_keep] bool), and the model's
    own surprisal in bits at every position ([n_seq, T] float32, NaN at the last position).
    Arrays are preallocated and filled batch by batch, so peak memory is the result itself.
    """
    n_seq, seq_len = tokens.shape
    n_keep = int(keep.sum())
    device = next(model.parameters()).device
    d = model.get_input_embeddings().weight.shape[1]
    n_layers = len(residual_modules(model)[0]) + 1
    layers = [np.empty((n_keep, d), dtype=np.float32) for _ in range(n_layers)]
    finite = np.ones(n_keep, dtype=bool)
    surprisal = np.full((n_seq, seq_len), np.nan, dtype=np.float32)

    was_training = model.training
    model.eval()
    row = 0
    progress = Progress(math.ceil(n_seq / batch_size), "activations", log)
    try:
        with residual_hooks(model) as states:
            for start in range(0, n_seq, batch_size):
                ids = torch.from_numpy(tokens[start : start + batch_size]).to(device)
                logits = model(input_ids=ids).logits
                surprisal[start : start + len(ids), :-1] = _next_token_bits(logits, ids, vocab_size)
                selected = torch.from_numpy(keep[start : start + len(ids)].ravel()).to(device)
                row = _store_kept_states(states, selected, layers, finite, row)
                progress.advance()
    finally:
        progress.close()
        model.train(was_training)
    return layers, finite, surprisal


def _next_token_bits(logits: torch.Tensor, ids: torch.Tensor, vocab_size: int) -> np.ndarray:
    """−log2 p(next token) at every position but the last ([batch, T − 1]), p the softmax of the
    logits truncated to ``vocab_size`` (a padded vocabulary's extra logits are no tokens)."""
    logits = truncate_logits(logits, vocab_size).float()
    log_q = F.log_softmax(logits[:, :-1], dim=-1)
    nats = -log_q.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (nats / LN2).cpu().numpy()


def _store_kept_states(
    states: list[torch.Tensor | None],
    selected: torch.Tensor,
    layers: list[np.ndarray],
    finite: np.ndarray,
    row: int,
) -> int:
    """Copy the ``selected`` positions of one batch's states ([batch · T] bool) into ``layers``
    from ``row`` on, clearing ``finite`` where any value is not; returns the next free row."""
    n = int(selected.sum())
    for layer, state in zip(layers, states, strict=True):
        flat = state.reshape(-1, layer.shape[1])[selected].float()
        finite[row : row + n] &= torch.isfinite(flat).all(-1).cpu().numpy()
        layer[row : row + n] = flat.cpu().numpy()
    return row + n


def _token_rows(
    tokens: np.ndarray, keep: np.ndarray, layers: list[np.ndarray], surprisal: np.ndarray
) -> Activations:
    """The kept positions as `Activations` rows, with their current and next token ids."""
    sequence, position = np.nonzero(keep)  # row-major, the order rows were filled in
    next_ids = np.full(tokens.shape, -1, dtype=np.int64)
    next_ids[:, :-1] = tokens[:, 1:]
    return Activations(
        tuple(layers),
        tokens[sequence, position],
        next_ids[sequence, position],
        surprisal[sequence, position],
        sequence,
        position,
    )


def _drop_non_finite(acts: Activations, finite: np.ndarray) -> Activations:
    """``acts`` without the rows that are not ``finite``, with a warning; more than
    `MAX_NAN_FRACTION` of them is an error, as the analyses would no longer describe the model
    (docs/method.md §10)."""
    n_keep = len(finite)
    n_bad = n_keep - int(finite.sum())
    if not n_bad:
        return acts
    log.warning("%d of %d tokens have non-finite activations; dropped", n_bad, n_keep)
    if n_bad > MAX_NAN_FRACTION * n_keep:
        raise ValueError(
            f"{n_bad} of {n_keep} tokens have non-finite activations "
            f"(more than {MAX_NAN_FRACTION:.0%}, docs/method.md §10)"
        )
    return acts.subset(finite)


@dataclass(frozen=True)
class LinearMap:
    """An affine map y = W x + b on column vectors, i.e. Y = X Wᵀ + b on rows of X.

    ``coef`` is W, [d_out, d_in]: sklearn's ``coef_`` layout ([targets, features]). ``intercept``
    is b, [d_out]. Both float64.
    """

    coef: np.ndarray
    intercept: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.coef.T + self.intercept


def fit_linear_maps(
    x: np.ndarray, targets: Mapping[str, np.ndarray], alpha: float = 1.0
) -> dict[str, LinearMap]:
    """Ridge maps x → each target: argmin_W,b ‖Y − X Wᵀ − b‖² + α‖W‖² (docs/method.md §10).

    One ``Ridge(alpha, fit_intercept=True)`` is fitted on the column-stacked targets. Ridge with a
    shared α decouples over target columns, so this equals one fit per target, and XᵀX is formed
    once. Inputs are cast to float64 (residual streams have outlier dimensions that make XᵀX
    badly conditioned in float32).
    """
    names = list(targets)
    widths = [targets[name].shape[1] for name in names]
    y = np.concatenate([np.asarray(targets[name], np.float64) for name in names], axis=1)
    reg = Ridge(alpha=alpha, fit_intercept=True).fit(np.asarray(x, np.float64), y)
    bounds = np.cumsum([0, *widths])
    return {
        name: LinearMap(reg.coef_[lo:hi], np.asarray(reg.intercept_[lo:hi]))
        for name, lo, hi in zip(names, bounds[:-1], bounds[1:], strict=True)
    }


def eigen_rotations(coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|arg λ_k| in degrees, |λ_k|) for every eigenvalue λ_k of a square map W
    (docs/method.md §10).

    A real map's complex eigenvalues come in conjugate pairs; each pair rotates one 2-D invariant
    plane by arg λ and scales it by |λ|. Negative real eigenvalues count as 180°. W and Wᵀ have the
    same eigenvalues, so the result does not depend on the row/column convention.
    """
    eigenvalues = np.linalg.eigvals(np.asarray(coef, np.float64))
    return np.abs(np.angle(eigenvalues, deg=True)), np.abs(eigenvalues)


def rotation_summary(coef: np.ndarray) -> tuple[float, float]:
    """(median rotation in degrees, median scaling) over all d eigenvalues, as the reference.

    Dominated by near-zero eigenvalues when the map is low-rank: their phases are noise, spread
    over 0–180°, so an identity on 64 of 576 directions scores ~80° (`dominant_rotation`)."""
    return _median_rotation(*eigen_rotations(coef))


def _median_rotation(angles: np.ndarray, moduli: np.ndarray) -> tuple[float, float]:
    return float(np.median(angles)), float(np.median(moduli))


# docs/method.md §10: eigenvalues with |λ| below this fraction of the largest |λ| are left out of
# the dominant rotation; their phases say nothing about what the map does.
DOMINANT_MODULUS = 0.1


def dominant_rotation(coef: np.ndarray) -> tuple[float, float, int]:
    """(median rotation in degrees, median scaling, count) over the eigenvalues with
    |λ| ≥ `DOMINANT_MODULUS` · max |λ| (docs/method.md §10; beside the paper's `rotation_summary`).

    A ridge map fitted where the activations have little variance has eigenvalues near 0 with
    phases set by noise; they are most of the d eigenvalues of a low-rank map and pull the
    all-eigenvalue median towards ~80° (uniform phases in 0–180° past the rank). Leaving them
    out recovers the rotation the map applies where it acts, for noise eigenvalues up to the
    cut-off in modulus. The count is the number of eigenvalues kept: the map's effective rank.
    """
    return _dominant_rotation(*eigen_rotations(coef))


def _dominant_rotation(angles: np.ndarray, moduli: np.ndarray) -> tuple[float, float, int]:
    kept = moduli >= DOMINANT_MODULUS * moduli.max()
    return float(np.median(angles[kept])), float(np.median(moduli[kept])), int(kept.sum())


def rotation_columns(coef: np.ndarray, name: str) -> dict[str, float | int]:
    """`fit_lens`'s rotation columns of map ``name`` from one eigendecomposition of its W: the
    paper's ``{name}_rotation`` and ``{name}_scaling`` (`rotation_summary`), and
    ``{name}_rotation_dominant``, ``{name}_scaling_dominant``, ``{name}_n_dominant``
    (`dominant_rotation`)."""
    angles, moduli = eigen_rotations(coef)
    rotation, scaling = _median_rotation(angles, moduli)
    dominant, dominant_scaling, n_dominant = _dominant_rotation(angles, moduli)
    return {
        f"{name}_rotation": rotation,
        f"{name}_scaling": scaling,
        f"{name}_rotation_dominant": dominant,
        f"{name}_scaling_dominant": dominant_scaling,
        f"{name}_n_dominant": n_dominant,
    }


def token_embeddings(model: nn.Module, ids: np.ndarray) -> np.ndarray:
    """The raw input embedding E[ids] ([n, d] float32): no position embedding, no dropout."""
    weight = model.get_input_embeddings().weight.detach()
    index = torch.from_numpy(np.asarray(ids, np.int64)).to(weight.device)
    return weight[index].float().cpu().numpy()


def fit_lens(
    train: Activations,
    evaluation: Activations,
    model: nn.Module,
    vocab_size: int,
    alpha: float = 1.0,
    batch_tokens: int = 1024,
) -> pd.DataFrame:
    """Fit the per-layer maps on ``train`` and score them on ``evaluation`` (docs/method.md §10).

    For each layer l = 0..L, ridge maps from h_l to h_L ("out", pre-LN), h_{L−1} ("secondlast")
    and the current token's input embedding ("in"). One row per layer, columns:

    - ``out_corr``: Pearson r between the lens surprisal −log2 softmax(U·LN(W_out h_l + b))[next]
      (the model's own final LN and unembedding U, logits truncated to ``vocab_size``) and the
      model's own output surprisal, over tokens that have a next token.
    - ``out_xent``: mean −ln q_lens(next token), nats. ``out_xent_model``: mean cross-entropy
      −Σ_v p_model(v) ln q_lens(v) against the model's own output distribution, nats (the
      reference's ``out_xent``), over the same tokens.
    - ``in_recall{1,5,10}``: fraction of tokens whose current token ranks < k under the logits
      E·(W_in h_l + b), E the input embedding (no LN; Pythia's untied embed_in, GPT-2's tied wte),
      rows truncated to ``vocab_size``; rank = #tokens with a strictly larger logit.
      ``in_surprisal``: mean −log2 softmax of those logits at the current token, bits.
    - ``{in,out,secondlast}_…``: `rotation_columns` of each map's W: the paper's median
      rotation and scaling over all eigenvalues, and over the dominant ones (`dominant_rotation`).
    - ``n_fit``, ``n_eval``: token counts.
    """
    top = train.n_blocks
    if top < 1 or evaluation.n_blocks != top:
        raise ValueError("train and eval activations need the same L ≥ 1 layers")
    targets = {
        "out": train.layers[top],
        "secondlast": train.layers[top - 1],
        "in": token_embeddings(model, train.input_ids),
    }
    maps = []
    for layer in range(top + 1):
        maps.append(fit_linear_maps(train.layers[layer], targets, alpha))
        log.info("layer %d: fitted ridge maps on %d tokens", layer, train.n_tokens)
    rows = _score_maps(maps, evaluation, model, vocab_size, batch_tokens)
    for layer, (row, layer_maps) in enumerate(zip(rows, maps, strict=True)):
        row.update(layer=layer, n_fit=train.n_tokens, n_eval=evaluation.n_tokens)
        for name in MAP_TARGETS:
            row.update(rotation_columns(layer_maps[name].coef, name))
    table = pd.DataFrame(rows)
    first = ["layer", "n_fit", "n_eval"]
    return table[first + [c for c in table.columns if c not in first]]


def recall_hits(logits: torch.Tensor, ids: torch.Tensor, ks: tuple[int, ...]) -> dict[int, int]:
    """For each k, how many rows rank their ``ids`` token below k, rank = the number of strictly
    larger logits. That rank is below k iff the k-th largest logit is ≤ the token's own, so one
    top-k replaces comparing every logit."""
    true = logits.gather(-1, ids[:, None])
    width = logits.shape[-1]
    largest = logits.topk(min(max(ks), width), dim=-1).values
    return {k: int((largest[:, min(k, width) - 1] <= true[:, 0]).sum()) for k in ks}


@dataclass(frozen=True)
class _Readout:
    """The modules every lens reads through: the model's own final LN and unembedding (for the
    next-token lens) and its input embedding (for current-token recall), which no mask touches,
    with the device and dtype the lens inputs are moved to."""

    norm: nn.Module
    unembed: nn.Module
    embed_in: torch.Tensor  # [vocab_size, d] float32
    vocab_size: int
    device: torch.device
    dtype: torch.dtype
    finish: Callable[[torch.Tensor], torch.Tensor]  # the class's logit soft-cap, if any

    @staticmethod
    def of(model: nn.Module, vocab_size: int) -> _Readout:
        _, norm = residual_modules(model)
        unembed = model.get_output_embeddings()
        weight = unembed.weight
        embed_in = model.get_input_embeddings().weight.detach()[:vocab_size].float()
        finish = functools.partial(spec_for(model).final_logits, model.config)
        return _Readout(norm, unembed, embed_in, vocab_size, weight.device, weight.dtype, finish)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """log softmax(U · LN(h)) over the first ``vocab_size`` tokens, float32 (soft-capped
        first where the class caps its logits, Gemma 2)."""
        logits = self.finish(self.unembed(self.norm(h.to(self.dtype))))
        return F.log_softmax(truncate_logits(logits, self.vocab_size).float(), dim=-1)

    def affine(self, m: LinearMap) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) of a ridge map as float32 tensors on the model's device."""
        return self.tensor(m.coef.astype(np.float32)), self.tensor(m.intercept.astype(np.float32))


@dataclass
class _LayerScore:
    """One layer's lens metrics, summed over token chunks (Python floats, so float64 sums)."""

    bits: list[np.ndarray] = field(default_factory=list)  # lens surprisal of each next token
    out_xent: float = 0.0
    out_xent_model: float = 0.0
    in_surprisal: float = 0.0
    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(RECALL_AT, 0))

    def add_next_token(
        self,
        readout: _Readout,
        out_map: tuple[torch.Tensor, torch.Tensor],
        h: torch.Tensor,
        next_ids: torch.Tensor,
        model_p: torch.Tensor,
    ) -> None:
        """Next-token lens on rows that have a next token: "out" map → final LN → unembedding."""
        w_out, b_out = out_map
        log_q = readout.log_probs(torch.addmm(b_out, h, w_out.T))
        nats = -log_q.gather(-1, next_ids[:, None]).squeeze(-1)
        self.bits.append((nats / LN2).cpu().numpy())
        self.out_xent += float(nats.sum())
        self.out_xent_model -= float((model_p * log_q).sum())

    def add_current_token(
        self,
        readout: _Readout,
        in_map: tuple[torch.Tensor, torch.Tensor],
        h: torch.Tensor,
        ids: torch.Tensor,
    ) -> None:
        """Current-token recall: "in" map (no LN) → input embedding."""
        w_in, b_in = in_map
        logits = torch.addmm(b_in, h, w_in.T) @ readout.embed_in.T
        for k, n_hits in recall_hits(logits, ids, RECALL_AT).items():
            self.hits[k] += n_hits
        log_r = F.log_softmax(logits, dim=-1).gather(-1, ids[:, None])
        self.in_surprisal -= float(log_r.sum()) / LN2

    def metrics(self, own_bits: np.ndarray, n_next: int, n_tokens: int) -> dict[str, float]:
        """The sums as `fit_lens` columns: means over the tokens each metric is defined on."""
        row = {
            "out_corr": pearson(np.concatenate(self.bits), own_bits),
            "out_xent": self.out_xent / n_next,
            "out_xent_model": self.out_xent_model / n_next,
        }
        row.update({f"in_recall{k}": self.hits[k] / n_tokens for k in RECALL_AT})
        row["in_surprisal"] = self.in_surprisal / n_tokens
        return row


@torch.no_grad()
def _score_maps(
    maps: list[dict[str, LinearMap]],
    acts: Activations,
    model: nn.Module,
    vocab_size: int,
    batch_tokens: int,
) -> list[dict[str, float]]:
    """Lens metrics of every layer's maps on ``acts``; token chunks outer so that the model's own
    distribution is computed once per chunk."""
    readout = _Readout.of(model, vocab_size)
    out_maps = [readout.affine(m["out"]) for m in maps]
    in_maps = [readout.affine(m["in"]) for m in maps]
    scores = [_LayerScore() for _ in maps]
    chunks = math.ceil(acts.n_tokens / batch_tokens)
    with Progress(chunks, "lens scoring", log, "chunk") as progress:
        for start in range(0, acts.n_tokens, batch_tokens):
            chunk = slice(start, start + batch_tokens)
            ids = readout.tensor(acts.input_ids[chunk])
            has_next = readout.tensor(acts.has_next[chunk])
            next_ids = readout.tensor(acts.next_ids[chunk])[has_next]
            top = readout.tensor(acts.layers[acts.n_blocks][chunk])[has_next]
            model_p = readout.log_probs(top).exp_()  # the model's own next-token distribution
            for layer, score in enumerate(scores):
                h = readout.tensor(acts.layers[layer][chunk])
                score.add_next_token(readout, out_maps[layer], h[has_next], next_ids, model_p)
                score.add_current_token(readout, in_maps[layer], h, ids)
            progress.advance(tokens=min(batch_tokens, acts.n_tokens - start))
    own_bits = acts.surprisal[acts.has_next]
    n_next = int(acts.has_next.sum())
    return [score.metrics(own_bits, n_next, acts.n_tokens) for score in scores]


def layer_covariances(acts: Activations, chunk: int = 16384) -> np.ndarray:
    """Σ_l = X̃_lᵀ X̃_l / n for every layer, X̃_l the token-centred states: [L+1, d, d] float64.

    Accumulated over row chunks in float64, so no float64 copy of a whole layer is made.
    """
    d = acts.layers[0].shape[1]
    out = np.zeros((len(acts.layers), d, d))
    for index, layer in enumerate(acts.layers):
        mean = layer.mean(axis=0, dtype=np.float64)
        for start in range(0, len(layer), chunk):
            centred = layer[start : start + chunk].astype(np.float64) - mean
            out[index] += centred.T @ centred
    return out / acts.n_tokens


# Tokens per block of the token-Gram route of `linear_cka`: L+1 float64 [block, block] Gram blocks
# are held at once (~260 MB for 31 layers).
CKA_TOKEN_BLOCK = 1024
CKA_ROUTES = ("auto", "features", "tokens")


def linear_cka(acts: Activations, route: str = "auto", chunk: int = 16384) -> np.ndarray:
    """Linear CKA of every pair of layers (Kornblith et al. 2019; docs/method.md §10):
    [L+1, L+1] float64.

    CKA(i, j) = ‖X̃_iᵀ X̃_j‖_F² / (‖X̃_iᵀ X̃_i‖_F ‖X̃_jᵀ X̃_j‖_F), X̃_l the token-centred states
    ([n, d]). Equivalently the cosine of the centred token Gram matrices K_l = X̃_l X̃_lᵀ: it
    compares how the layers arrange the *same tokens*, so two layers whose variance sits in the
    same dimension but on unrelated tokens score near 0 where the covariance cosine scores near 1.
    Invariant to orthogonal transforms and isotropic scaling of either layer; 1 on the diagonal.

    Two exact routes to the numerators ‖X̃_iᵀ X̃_j‖² = ⟨K_i, K_j⟩_F, both in float64; ``auto``
    takes the one with fewer multiply-adds:
    - ``features``: the [d, d] cross-products X̃_iᵀ X̃_j summed over token chunks, layer i against
      every layer j ≥ i at once: (L+1)(L+2)/2 · n d², and (L+1) d² floats of memory at most;
    - ``tokens``: ⟨K_i, K_j⟩ summed over [block, block] tiles of the Gram matrices, every layer's
      tile at once: n²/2 · ((L+1) d + (L+1)(L+2)/2), better when n < (L+2) d / 2 or so (SmolLM2's
      31 layers of 576 on 4,096 tokens: 4× fewer than the other route).
    """
    if route not in CKA_ROUTES:
        raise ValueError(f"route must be one of {CKA_ROUTES}, got {route!r}")
    n_layers, d, n = len(acts.layers), acts.layers[0].shape[1], acts.n_tokens
    pairs = n_layers * (n_layers + 1) / 2
    if route == "auto":
        by_tokens = n * n / 2 * (n_layers * d + pairs) < pairs * n * d * d
        route = "tokens" if by_tokens else "features"
    means = [layer.mean(axis=0, dtype=np.float64) for layer in acts.layers]

    def centred(index: int, start: int, size: int) -> np.ndarray:
        return acts.layers[index][start : start + size].astype(np.float64) - means[index]

    squares = np.zeros((n_layers, n_layers))  # ‖X̃_iᵀ X̃_j‖_F² = ⟨K_i, K_j⟩_F
    if route == "features":
        for i in range(n_layers):
            cross = np.zeros((n_layers - i, d, d))  # X̃_iᵀ X̃_j for j = i … L
            for start in range(0, n, chunk):
                left = centred(i, start, chunk)
                for j in range(i, n_layers):
                    cross[j - i] += left.T @ centred(j, start, chunk)
            squares[i, i:] = squares[i:, i] = np.einsum("kab,kab->k", cross, cross)
    else:
        block = min(chunk, CKA_TOKEN_BLOCK)
        starts = range(0, n, block)
        for a in starts:
            rows = [centred(index, a, block) for index in range(n_layers)]
            for b in starts[a // block :]:
                cols = rows if b == a else [centred(index, b, block) for index in range(n_layers)]
                tiles = np.stack([x @ y.T for x, y in zip(rows, cols, strict=True)])
                tiles = tiles.reshape(n_layers, -1)  # K_l[a, b] of every layer
                squares += (1.0 if b == a else 2.0) * (tiles @ tiles.T)  # K[b, a] = K[a, b]ᵀ
    norms = np.sqrt(np.diag(squares))
    return squares / np.outer(norms, norms)


def covariance_similarity(acts: Activations) -> pd.DataFrame:
    """Cosine similarity of layer covariances, and linear CKA, for every pair of layers
    (docs/method.md §10).

    sim(i, j) = ⟨Σ_i, Σ_j⟩_F / (‖Σ_i‖_F ‖Σ_j‖_F), ⟨A, B⟩_F = Σ_ab A_ab B_ab = tr(Aᵀ B), with
    Σ_l = X̃_lᵀ X̃_l / n the centred covariance over tokens ([d, d], float64). The d×d matrices
    are formed once per layer (O(n d²)); each pair then costs O(d²). Symmetric, 1 on the
    diagonal, and in [0, 1] (covariances are PSD). It compares second moments in a fixed basis
    and ignores which tokens they come from: near 1 for any two roughly isotropic layers, and
    for any two layers that share one high-variance (massive-activation) dimension, whatever
    else they hold. ``cka`` is `linear_cka`, which compares the tokens' arrangement instead.

    Returns a tidy table with columns layer_i, layer_j, similarity, cka, all (L+1)² ordered
    pairs.
    """
    sigma = layer_covariances(acts).reshape(len(acts.layers), -1)
    norms = np.linalg.norm(sigma, axis=1)
    similarity = (sigma @ sigma.T) / np.outer(norms, norms)
    del sigma
    cka = linear_cka(acts)
    n = len(similarity)
    layer_i, layer_j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return pd.DataFrame(
        {
            "layer_i": layer_i.ravel(),
            "layer_j": layer_j.ravel(),
            "similarity": similarity.ravel(),
            "cka": cka.ravel(),
        }
    )


# The authors run the full model, the bigram subnetwork and its complement (docs/method.md §10);
# the covariance figure adds a random subnetwork with the same count per matrix
# (ablation.ablation_masks).
LENS_CONDITIONS = ("full", "subnetwork", "full_minus_subnetwork", "random")


def analyze_conditions(
    model: nn.Module,
    mask: Mask,
    fit_tokens: np.ndarray,
    eval_tokens: np.ndarray,
    vocab_size: int,
    batch_size: int,
    seed: int,
    alpha: float = 1.0,
    max_tokens: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`fit_lens` and `covariance_similarity` (on the eval activations) for every condition in
    `LENS_CONDITIONS`; both tables gain a ``condition`` column."""
    conditions = ablation_masks(mask, seed)
    lens_tables, covariance_tables = [], []
    for condition in LENS_CONDITIONS:
        with apply_mask(model, conditions[condition]):
            fit = collect_activations(model, fit_tokens, vocab_size, batch_size, max_tokens, seed)
            held_out = collect_activations(
                model, eval_tokens, vocab_size, batch_size, max_tokens, seed
            )
            lens_tables.append(fit_lens(fit, held_out, model, vocab_size, alpha))
        covariance_tables.append(covariance_similarity(held_out))
        log.info("condition %s done", condition)
    return (
        pd.concat(lens_tables, keys=LENS_CONDITIONS, names=["condition"]).reset_index(0),
        pd.concat(covariance_tables, keys=LENS_CONDITIONS, names=["condition"]).reset_index(0),
    )

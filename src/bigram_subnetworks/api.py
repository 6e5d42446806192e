"""The library in one call: find, evaluate, save and load the bigram subnetwork of a model.

    from bigram_subnetworks import find_bigram_subnetwork, evaluate_subnetwork
    found = find_bigram_subnetwork(model, tokenizer, texts, lam=10)
    metrics = evaluate_subnetwork(model, found.mask, tokenizer, eval_texts, found.bigrams)

`model` is any supported Hugging Face causal LM (`architectures.REGISTRY`), `texts` a list of
strings (or `tokens`, an int array [sequences, seq_len]). The training settings default to the
paper's (`training.MaskTrainingConfig`); any of them can be given as keyword arguments. The
model may be fp32, bf16 or fp16: while a call runs it sits on the training device (CUDA when
available) with fp32 weights, in eval mode (`runtime.working_model`), and it comes back on its
own device, in its own dtype, mode and requires_grad, bit-identical. The workflow runs the same
functions, stage by stage, with cached artifacts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import __version__
from .ablation import max_positions
from .architectures import maskable_parameters, spec_for
from .bigrams import BigramCounts, BigramModel
from .corpus import sequences_from_texts
from .io import read_json, read_table, write_json, write_table
from .masking import Mask, apply_mask
from .progress import StepCallback, reporting
from .runtime import working_model
from .targets import BigramTarget, TeacherTarget
from .training import MaskTrainingConfig, TrainResult, is_converged, train_mask

log = logging.getLogger(__name__)

MASK_FILE, HISTORY_FILE, META_FILE, BIGRAMS_FILE = (
    "mask.safetensors", "history.tsv", "meta.json", "bigrams.npz"
)  # fmt: skip
# The on-disk format of a subnetwork directory, shared with the workflow's mask directories
# (rule train_mask): a library save is a workflow mask and a workflow mask loads here.
FORMAT_VERSION = 1
_FINGERPRINT_SAMPLE = 4096  # values per weight matrix hashed into the weights fingerprint


def model_fingerprint(model: nn.Module, tokenizer=None) -> dict[str, Any]:
    """What a subnetwork belongs to: the base model's name and revision (when it came from the
    hub or a directory), a hash of its maskable weights' names and shapes (`layout`) and one of
    their values (`weights`: names, shapes and an evenly strided sample of each matrix, as
    fp32, so another checkpoint of the same shape is told apart), and the tokenizer."""
    weights = maskable_parameters(model)
    layout, values = hashlib.sha256(), hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach()
        layout.update(f"{name}:{tuple(tensor.shape)};".encode())
        flat = tensor.reshape(-1)
        sample = flat[:: max(1, flat.numel() // _FINGERPRINT_SAMPLE)][:_FINGERPRINT_SAMPLE]
        values.update(sample.to("cpu", torch.float32).numpy().tobytes())
    config = getattr(model, "config", None)
    return {
        "base_model": getattr(config, "name_or_path", None) or None,
        "revision": getattr(config, "_commit_hash", None),
        "layout": layout.hexdigest()[:16],
        "weights": hashlib.sha256(layout.digest() + values.digest()).hexdigest()[:16],
        "tokenizer": getattr(tokenizer, "name_or_path", None) or None,
        "vocab_size": len(tokenizer) if tokenizer is not None else None,
    }


@dataclass(frozen=True)
class Subnetwork:
    """A trained subnetwork: the binary mask, every step of training (`training.HISTORY_COLUMNS`),
    the settings, which attempt was kept, whether it passed the stability check (``stable``) and
    how training ended (``ended``, ``converged``: docs/method.md §4), the bigram statistics it
    was trained towards (None for an optimal subnetwork), and what it belongs to
    (``provenance``: `model_fingerprint`, the library's version)."""

    mask: Mask
    history: pd.DataFrame
    config: MaskTrainingConfig
    target: str
    attempt: int
    steps: int
    stable: bool
    reason: str
    bigrams: BigramModel | None = None
    ended: str = "early_stop"
    undecided_fraction: float = 0.0
    undecided_to_on: float = 0.0
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether training ended by the paper's early-stop rule (`training.ENDINGS`): a mask
        that ran out of ``max_steps`` still has undecided weights and is not a final result."""
        return is_converged(self.ended)

    def meta(self) -> dict[str, Any]:
        """meta.json: the keys of a workflow mask's (rule train_mask) and the provenance."""
        return {
            "target": self.target, "lam_value": self.config.lam,
            "training": dataclasses.asdict(self.config), "attempt": self.attempt,
            "steps": self.steps, "stable": self.stable, "outcome": self.reason,
            "ended": self.ended, "converged": self.converged,
            "undecided_fraction": self.undecided_fraction,
            "undecided_to_on": self.undecided_to_on,
            "n_kept": self.mask.n_kept, "n_total": self.mask.n_total,
            "provenance": self.provenance, "format_version": FORMAT_VERSION,
            "bigram_subnetworks": __version__,
        }  # fmt: skip

    @classmethod
    def from_result(
        cls, result: TrainResult, config: MaskTrainingConfig, target: str,
        provenance: dict[str, Any], bigrams: BigramModel | None = None,
    ) -> Subnetwork:  # fmt: skip
        """The subnetwork a training run (`training.train_mask`) found in a model
        (``provenance``: its `model_fingerprint`, taken before training)."""
        return cls(result.mask, result.history, config, target, result.attempt, result.steps,
                   result.stable, result.reason, bigrams, result.ended,
                   result.undecided_fraction, result.undecided_to_on, provenance)  # fmt: skip

    def write_files(
        self, mask: str | os.PathLike, history: str | os.PathLike, meta: str | os.PathLike,
        **extra: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """The one on-disk format of a subnetwork, written by `save` and by the workflow's mask
        rules: the mask (its meta.json also in the safetensors header), the training history and
        meta.json (`meta`, after ``extra``: the workflow's rule, wildcards and versions). Each
        file is written atomically. Returns the meta written."""
        written = {**extra, **self.meta()}
        self.mask.save(mask, meta=written)
        write_table(self.history, history)
        write_json(written, meta)
        return written

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> None:
        """mask.safetensors, history.tsv, meta.json (and bigrams.npz) in ``directory``, written
        whole or not at all: into a new directory beside it, then renamed into place, so an
        old save is never mixed with a new one and a failed save leaves the old one intact.
        An existing ``directory`` is replaced only with ``overwrite=True``."""
        directory = Path(directory)
        if directory.exists() and not overwrite:
            raise FileExistsError(f"{directory} exists: pass overwrite=True to replace it")
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            if self.bigrams is not None:
                self.bigrams.counts.save(staging / BIGRAMS_FILE)
            self.write_files(staging / MASK_FILE, staging / HISTORY_FILE, staging / META_FILE)
            if directory.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
                os.replace(directory, old / directory.name)
                os.replace(staging, directory)
                shutil.rmtree(old)
            else:
                os.replace(staging, directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Subnetwork:
        """A subnetwork saved by `save`, or a workflow mask directory (results/masks/…; its
        bigram table is the run's, not in the directory: evaluate with that)."""
        directory = Path(directory)
        meta = read_json(directory / META_FILE)
        bigrams = None
        if (directory / BIGRAMS_FILE).is_file():
            bigrams = BigramModel(BigramCounts.load(directory / BIGRAMS_FILE))
        return cls(
            mask=Mask.load(directory / MASK_FILE),
            history=read_table(directory / HISTORY_FILE),
            config=MaskTrainingConfig(**meta["training"]), target=meta["target"],
            attempt=meta["attempt"], steps=meta["steps"], stable=meta["stable"],
            reason=meta["outcome"], bigrams=bigrams, ended=meta["ended"],
            undecided_fraction=meta["undecided_fraction"],
            undecided_to_on=meta["undecided_to_on"],
            provenance=meta.get("provenance", {}),
        )  # fmt: skip

    @contextlib.contextmanager
    def apply(self, model: nn.Module, *, strict: bool = False) -> Iterator[nn.Module]:
        """`masking.apply_mask` with this subnetwork's mask, after `check_model`: the masked-out
        weights are zero for the body and restored after."""
        self.check_model(model, strict=strict)
        with apply_mask(model, self.mask):
            yield model

    def check_model(self, model: nn.Module, *, strict: bool = False) -> None:
        """Warn (or with ``strict`` refuse) when ``model`` is not the one this subnetwork was
        trained on: other weights of the same layout give meaningless results silently."""
        saved = self.provenance.get("weights")
        if saved is None:
            return
        current = model_fingerprint(model)["weights"]
        if current != saved:
            message = (
                f"this subnetwork was trained on other weights ({self.provenance.get('base_model')}"
                f", fingerprint {saved}) than this model's ({current}): another checkpoint or "
                "dtype of the same layout"
            )
            if strict:
                raise ValueError(message)
            warnings.warn(message, stacklevel=3)


def _sequences(model: nn.Module, tokenizer, texts, tokens, seq_len: int) -> np.ndarray:
    """The token rows a call works on, checked against the model's positions."""
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer ≥ 2 (a token and its next), got {seq_len!r}")
    if texts is not None:
        count = 1 if isinstance(texts, str) else len(texts)
        log.info("tokenizing %d texts into sequences of %d tokens", count, seq_len)
    rows = _rows(tokenizer, texts, tokens, seq_len)
    positions = max_positions(model)
    if rows.shape[1] > positions:
        raise ValueError(
            f"sequences of {rows.shape[1]} tokens are longer than {type(model).__name__}'s "
            f"{positions} positions: give seq_len ≤ {positions}"
        )
    return rows


def _rows(tokenizer, texts, tokens, seq_len: int) -> np.ndarray:
    if (texts is None) == (tokens is None):
        raise ValueError("give either texts (with a tokenizer) or tokens, not both")
    if tokens is not None:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer) or not tokens.size:
            raise ValueError(f"tokens must be a non-empty int array [sequences, seq_len], got "
                             f"{tokens.dtype} {tokens.shape}")  # fmt: skip
        return tokens
    if tokenizer is None:
        raise ValueError("texts need the model's tokenizer")
    if isinstance(texts, str):
        texts = [texts]
    return sequences_from_texts(tokenizer, texts, seq_len)


def _vocab_size(model: nn.Module, tokenizer, vocab_size: int | None) -> int:
    """The tokenizer's vocabulary (logits beyond it are padding, as Pythia's), checked against
    the model's embedding."""
    embedding = model.get_input_embeddings().num_embeddings
    size = vocab_size or (len(tokenizer) if tokenizer is not None else embedding)
    if size > embedding:
        raise ValueError(
            f"a vocabulary of {size} tokens does not fit {type(model).__name__}'s embedding of "
            f"{embedding} rows: tokenizer and model do not match"
        )
    return size


def _train(model, tokenizer, target, target_name, tokens, lam, device, on_step, settings):
    config = MaskTrainingConfig(lam=lam, **settings)
    if len(tokens) < config.batch_size:
        raise ValueError(
            f"{len(tokens)} training sequences are fewer than one batch ({config.batch_size}): "
            "give more text, a shorter seq_len or a smaller batch_size"
        )
    provenance = model_fingerprint(model, tokenizer)
    result = train_mask(model, target, tokens, config, device, on_step=on_step)
    bigrams = target.bigrams if isinstance(target, BigramTarget) else None
    return Subnetwork.from_result(result, config, target_name, provenance, bigrams)


def find_bigram_subnetwork(
    model: nn.Module,
    tokenizer=None,
    texts: Sequence[str] | None = None,
    *,
    lam: float = 10.0,
    tokens: np.ndarray | None = None,
    seq_len: int = 128,
    bigrams: BigramModel | None = None,
    vocab_size: int | None = None,
    device=None,
    on_step: StepCallback | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> Subnetwork:
    """The bigram subnetwork of ``model``: the mask trained so that the masked model predicts
    P(next | current token), counted on the same text unless ``bigrams`` are given
    (docs/method.md §2–§5). ``settings`` override the paper's training values (e.g.
    ``max_steps=2000``, ``learning_rate=0.1, beta_growth=1.04`` for a CPU budget); ``on_step``
    receives every step's history row; ``progress`` as in `progress.reporting` (None: a bar
    where a person watches, log lines when logging is not configured; False: silent)."""
    spec_for(model)  # an unsupported model is named with the supported families, before any work
    with reporting(progress):
        tokens = _sequences(model, tokenizer, texts, tokens, seq_len)
        size = _vocab_size(model, tokenizer, vocab_size)
        if bigrams is None:
            log.info("counting bigrams over %d tokens (vocabulary %d)", tokens.size, size)
            bigrams = BigramModel(BigramCounts.count(tokens, size))
        elif bigrams.vocab_size != size:
            raise ValueError(
                f"bigram table of {bigrams.vocab_size} tokens for a {size}-token vocabulary"
            )
        with working_model(model, device) as device:
            target = BigramTarget(bigrams, device=device)
            return _train(
                model, tokenizer, target, "bigram", tokens, lam, device, on_step, settings
            )


def find_optimal_subnetwork(
    model: nn.Module,
    tokenizer=None,
    texts: Sequence[str] | None = None,
    *,
    lam: float = 10.0,
    tokens: np.ndarray | None = None,
    seq_len: int = 128,
    vocab_size: int | None = None,
    device=None,
    on_step: StepCallback | None = None,
    progress: bool | None = None,
    **settings: Any,
) -> Subnetwork:
    """The optimal-pruning subnetwork of ``model`` (the paper's baseline): the same training
    towards the full model's own next-token distribution (docs/method.md §5)."""
    spec_for(model)
    precision = MaskTrainingConfig(lam=lam, **settings).precision  # of the teacher's forward too
    with reporting(progress):
        tokens = _sequences(model, tokenizer, texts, tokens, seq_len)
        size = _vocab_size(model, tokenizer, vocab_size)
        with working_model(model, device) as device:
            target = TeacherTarget(model, size, precision)
            return _train(
                model, tokenizer, target, "optimal", tokens, lam, device, on_step, settings
            )


def evaluate_subnetwork(
    model: nn.Module,
    mask: Mask | Subnetwork,
    tokenizer=None,
    texts: Sequence[str] | None = None,
    bigrams: BigramModel | None = None,
    *,
    tokens: np.ndarray | None = None,
    seq_len: int = 128,
    batch_size: int = 32,
    fidelity: bool = False,
    device=None,
    progress: bool | None = None,
    strict: bool = False,
) -> dict[str, float]:
    """`evaluation.evaluate_mask` on held-out text: bigram r (drop-inf, clip-inf), cross-entropy
    against the bigram distribution, size; with ``fidelity``, agreement with the full model.
    ``bigrams`` are the statistics the mask was trained towards (`Subnetwork.bigrams`). Given
    a `Subnetwork`, its own bigrams are the default, and a model with other weights than it was
    trained on is warned about (refused with ``strict=True``)."""
    from .evaluation import evaluate_mask

    if isinstance(mask, Subnetwork):
        mask.check_model(model, strict=strict)
        bigrams = mask.bigrams if bigrams is None else bigrams
        mask = mask.mask
    if isinstance(texts, BigramModel) or isinstance(tokenizer, list | tuple):
        raise TypeError(
            "evaluate_subnetwork(model, mask, tokenizer, texts, bigrams): the arguments are out "
            "of order (a list of texts where the tokenizer goes, or bigrams where the texts go)"
        )
    if not isinstance(bigrams, BigramModel):
        raise ValueError(
            "evaluation needs the bigram statistics the mask was trained towards (a "
            f"BigramModel, e.g. Subnetwork.bigrams), got {type(bigrams).__name__}"
        )
    spec_for(model)
    mask.check_matches(model)
    if set(mask.tensors) != set(maskable_parameters(model)):
        raise ValueError("the mask does not cover every maskable weight of this model")
    with reporting(progress):
        tokens = _sequences(model, tokenizer, texts, tokens, seq_len)
        with working_model(model, device):
            return evaluate_mask(model, mask, tokens, bigrams, batch_size, fidelity=fidelity)


def sweep_lambdas(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    held_out: Sequence[str],
    lams: Sequence[float] = (1.0, 10.0, 100.0, 1000.0),
    *,
    seq_len: int = 128,
    batch_size: int = 32,
    device=None,
    progress: bool | None = None,
    **settings: Any,
) -> pd.DataFrame:
    """Bigram subnetworks at each λ of ``lams`` and the r-vs-size table the paper's Figure 1
    draws: one row per λ (size, r, how training ended: docs/method.md §6, §4) after a first row
    for the full model (λ = −∞, every weight kept: the baseline a subnetwork should beat). The
    bigram table is counted once, on ``texts``, and shared; ``settings`` are the training
    settings of every λ. Choose the λ whose r is highest, or the sparsest near it."""
    if not lams:
        raise ValueError("give at least one λ")
    rows = []
    with reporting(progress):
        tokens = _sequences(model, tokenizer, texts, None, seq_len)
        size = _vocab_size(model, tokenizer, None)
        bigrams = BigramModel(BigramCounts.count(tokens, size))
        full = Mask.full({name: w.shape for name, w in maskable_parameters(model).items()})
        held = _sequences(model, tokenizer, held_out, None, seq_len)  # tokenized once for all λ
        evaluate = dict(tokenizer=tokenizer, tokens=held, bigrams=bigrams, seq_len=seq_len,
                        batch_size=batch_size, device=device, progress=progress)  # fmt: skip
        rows.append({"lam": -np.inf, "converged": True, "stable": True,
                     **evaluate_subnetwork(model, full, **evaluate)})  # fmt: skip
        for lam in lams:
            log.info("λ sweep: λ = %g", lam)
            found = find_bigram_subnetwork(
                model, tokenizer, lam=lam, tokens=tokens, bigrams=bigrams, device=device,
                progress=progress, **settings,
            )  # fmt: skip
            rows.append({"lam": lam, "converged": found.converged, "stable": found.stable,
                         **evaluate_subnetwork(model, found, **evaluate)})  # fmt: skip
    columns = ["lam", "n_kept", "kept_fraction", "r_drop_inf", "r_clip_inf", "converged", "stable"]
    table = pd.DataFrame(rows)
    return table[columns + [c for c in table.columns if c not in columns]]

"""Device, precision and data order shared by pretraining and mask training."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .architectures import family_of
from .settings import PRECISIONS

log = logging.getLogger(__name__)


def default_device(device: torch.device | str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextlib.contextmanager
def working_model(
    model: nn.Module, device: torch.device | str | None = None
) -> Iterator[torch.device]:
    """The library's rule for a caller's model (docs/method.md §4, "Precision"): for the body it
    sits on ``device`` (default: CUDA when available) with fp32 weights, in eval mode; on CUDA
    the steps then autocast to bf16 as the authors train, on the CPU they stay fp32. Afterwards
    every parameter and buffer is back on its own device in its own dtype (bf16 and fp16 widen
    to fp32 exactly, so they come back bit-identical), with its own ``requires_grad``, and the
    model in its own train/eval mode, also when the body raises. Yields the device."""
    device = default_device(device)
    params = [(p, p.device, p.dtype, p.requires_grad) for p in model.parameters()]
    # `Module.to` replaces buffers by new tensors (parameters keep their objects): by name.
    buffers = [(name, b.device, b.dtype) for name, b in model.named_buffers()]
    was_training = model.training
    narrow = {str(p.dtype) for p, *_ in params if p.dtype in (torch.bfloat16, torch.float16)}
    if narrow:
        log.info("widening the %s weights to fp32 while computing; they are restored after",
                 "/".join(sorted(narrow)))  # fmt: skip
    try:
        model.to(device=device, dtype=torch.float32).eval()
        yield device
    finally:
        with torch.no_grad():
            for parameter, original, dtype, requires_grad in params:
                parameter.data = parameter.data.to(original, dtype)
                parameter.requires_grad_(requires_grad)
            for name, original, dtype in buffers:
                owner, _, attribute = name.rpartition(".")
                module = model.get_submodule(owner)
                module._buffers[attribute] = module._buffers[attribute].to(original, dtype)
        model.train(was_training)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Subnormal floats flushed to zero in the calling thread for the body. Late in mask
    training the scores' gradients β·σ'(βs)·… and AdamW's second moments fall into fp32's
    subnormal range, where x86 arithmetic is many times slower (SmolLM2, one thread: 4–6 s per
    step became 16–18 s at β > 200; docs/schedule-trials.md). PyTorch sets the flag per
    thread, so it covers single-threaded jobs (the workflow's mask jobs on a CPU) fully and the
    intra-op worker threads of a multi-threaded one not at all; soft masks below
    `masking.OFF_BELOW` are zeroed for that case."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def autocast(device: torch.device, precision: str = "auto"):
    """The precision of a forward (`settings.PRECISIONS`): "auto" is bf16 autocast on CUDA and
    full precision on the CPU, where bf16 matrix products are slow unless the CPU has native
    bf16 instructions; "bf16" autocasts on any device; "fp32" never does."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        if device.type == "cpu":
            _check_cpu_bf16()
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16, AMX) that make bf16 matrix products
    fast; without them CPU bf16 is many times slower than fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def _check_cpu_bf16() -> None:
    if not cpu_has_native_bf16():
        log.warning("bf16 on a CPU without native bf16 instructions: expect slower steps than fp32")


def seeded_batches(
    tokens: np.ndarray, batch_size: int, seed: int, start: int = 0
) -> Iterator[torch.Tensor]:
    """Endless int64 batches of sequences in an order seeded by (seed, epoch), reshuffled every
    epoch; the incomplete last batch of an epoch is dropped. Rows are read in sorted order, which
    is kind to memory-mapped token files. ``start`` skips that many batches without reading them:
    the order depends on (seed, batch index) only, so a resumed run sees the batches it would
    have seen."""
    if len(tokens) < batch_size:
        raise ValueError(f"{len(tokens)} training sequences are fewer than a batch ({batch_size})")
    if start < 0:
        raise ValueError(f"cannot start at batch {start}")
    per_epoch = len(tokens) // batch_size
    epoch, skip = divmod(start, per_epoch)
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(tokens))
        for first in range(skip * batch_size, per_epoch * batch_size, batch_size):
            batch = tokens[np.sort(order[first : first + batch_size])]
            yield torch.from_numpy(np.asarray(batch, dtype=np.int64))
        epoch, skip = epoch + 1, 0


class _FullPrecisionUnembedding(nn.Module):
    """A causal LM whose unembedding runs in fp32 even under autocast: the transformer (its
    `base_model`) gives the last hidden state, which is cast to fp32 and unembedded with autocast
    off, then soft-capped where the family's class does so (`ArchSpec.final_logits`, Gemma 2).
    Every family of the registry computes its logits exactly so (tested per class)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        config = self.model.config
        spec = family_of(getattr(config, "model_type", None))
        hidden = self.model.base_model(input_ids=input_ids).last_hidden_state
        with torch.autocast(hidden.device.type, enabled=False):
            logits = self.model.get_output_embeddings()(hidden.float())
            return logits if spec is None else spec.final_logits(config, logits)


def model_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    parameters: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The logits of a causal LM, with ``parameters`` substituted for the model's own of the same
    names (`torch.func.functional_call`; the model is untouched).

    Under autocast (bf16 on CUDA) the blocks run in bf16 but the unembedding in fp32: logits of
    magnitude 64–128 (GPT-2's sit around −60 to −100) are spaced 0.5 apart in bf16, so the
    rounding alone would move a cross-entropy by up to ~0.25 nats. Without autocast this is the
    model's own forward.
    """
    parameters = dict(parameters or {})
    if not torch.is_autocast_enabled(input_ids.device.type):
        return functional_call(
            model, parameters, args=(), kwargs={"input_ids": input_ids}, strict=False,
            tie_weights=True,
        ).logits  # fmt: skip
    wrapped = {f"model.{name}": tensor for name, tensor in parameters.items()}
    return functional_call(
        _FullPrecisionUnembedding(model), wrapped, args=(input_ids,), strict=False,
        tie_weights=True,
    )  # fmt: skip

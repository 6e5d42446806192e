"""Taking a `Mask` to other tools: the authors' pickle format, per-head and per-neuron tables, a
permanently masked model, TransformerLens and nnsight (recipes in docs/interop.md).

The authors' code (github.com/tylerachang/bigram-subnetworks) exchanges subnetworks as a pickled
dict {Hugging Face parameter name: numpy bool array shaped like the weight} plus the string entry
``orig_model_name`` (their `get_mask_dict`); `export_released` writes that, so their
`load_subnetwork_model` runs our masks, and `released.load_released_mask` reads theirs.

The views read the registry's layout (`architectures.iter_blocks`, `model_unit_blocks`), so
GPT-NeoX's interleaved QKV, GPT-2's (in, out) Conv1D and grouped-query attention are handled where
everything else handles them, without a branch on the family here.

Interpretability libraries get a *copy* of the model with the masked-out weights set to zero:
TransformerLens's bridge replaces the wrapped model's submodules in place, and a copy keeps the
caller's model usable. TransformerLens's weight processing (fold_ln, centering) is never applied
here: it rewrites the weights into another basis, where the subnetwork's zeros are no longer zero
(see `to_transformer_lens`).

transformer_lens and nnsight are optional: they are imported only by the functions that use them.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .architectures import (
    ATTENTION_BLOCKS,
    MLP_BLOCKS,
    iter_blocks,
    maskable_parameters,
    model_unit_blocks,
)
from .atomic import atomic_path
from .masking import Mask

log = logging.getLogger(__name__)

MODEL_NAME_KEY = "orig_model_name"
# enable_compatibility_mode's weight-processing options: each rewrites the block weights (or the
# unembedding) into TransformerLens's processed basis, so masked-out zeros do not stay zero.
TL_PROCESSING_OPTIONS = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)


# --- the authors' pickle format ----------------------------------------------------------------


def to_mask_dict(mask: Mask, model_name: str) -> dict[str, Any]:
    """What the authors' `get_mask_dict` returns for this mask: {name: numpy bool array} in sorted
    name order (they walk ``sorted(state_dict())``), then ``orig_model_name``.

    Their loader multiplies each weight by its array and their helpers (`set_attention_head`,
    `set_layer`) write into the arrays, so these are C-contiguous bool copies shaped as the
    weight: editing them leaves the (immutable) `Mask` as it was.
    """
    return _mask_dict(mask, model_name, copy=True)


def _mask_dict(mask: Mask, model_name: str, copy: bool | None) -> dict[str, Any]:
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(
            f"model_name must name the base model (a Hugging Face id or a local directory), "
            f"got {model_name!r}: the authors' loader reads it back as {MODEL_NAME_KEY!r}"
        )
    if MODEL_NAME_KEY in mask.tensors:
        raise ValueError(
            f"the mask has a weight named {MODEL_NAME_KEY!r}, the format's metadata key"
        )
    out: dict[str, Any] = {
        name: np.array(mask.tensors[name].detach().cpu().numpy(), np.bool_, copy=copy, order="C")
        for name in sorted(mask.tensors)
    }
    out[MODEL_NAME_KEY] = model_name
    return out


class _Numpy1Global:
    """Stands for ``numpy.core.numeric._frombuffer`` in a pickle written under NumPy 2, whose own
    arrays name ``numpy._core.numeric``, a module NumPy 1.x does not have (numpy/numpy#28340)."""

    def __call__(self, *args: Any) -> None:  # save_reduce requires a callable
        raise TypeError("a placeholder for pickling only")


_FROMBUFFER_V1 = _Numpy1Global()


# Why the private pure-Python pickler (`pickle._Pickler` and its `dispatch` table): NumPy 1.x's
# bytes name the global numpy.core.numeric._frombuffer, which under NumPy 2 resolves to an object
# whose own path is numpy._core.numeric. Every public hook (`reducer_override` on a
# `pickle.Pickler` subclass, `dispatch_table`/`copyreg`, a `__reduce__` returning a global's name)
# ends in the pickler's save_global, which refuses to write a global unless importing its path
# gives back the very object being saved ("it's not the same object as
# numpy.core.numeric._frombuffer"), and the real function is written under numpy._core. Tried with
# Python 3.11.7 and NumPy 2.4.6: each public hook raised PicklingError or wrote numpy._core. Only
# the pure-Python pickler's dispatch table can emit the STACK_GLOBAL opcode itself.
# tests/test_interop.py's numpy1 cases fail if `pickle._Pickler` changes; the public fallback then
# is `reducer_override` returning ``(numpy.ndarray, (shape, dtype, bytearray))``: NumPy 1.x and
# 2 load it (writable, C-contiguous) and `released` allows it, but NumPy 1.x writes other bytes.
class _Numpy1Pickler(pickle._Pickler):
    """Pickles arrays exactly as NumPy 1.x does at protocol 5 (``_frombuffer(bytearray, dtype,
    shape, order)``, the bytes in-band, so they unpickle writable) under the module path NumPy 1.x
    has and NumPy 2 still resolves (``numpy.core``, with a DeprecationWarning). The pure-Python
    pickler is used because the C one insists that a global is the object its path names (see
    the comment above)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_numpy1_global(self, obj: _Numpy1Global) -> None:
        self.save("numpy.core.numeric")
        self.save("_frombuffer")
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch[_Numpy1Global] = _save_numpy1_global

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            array = np.ascontiguousarray(obj)
            return _FROMBUFFER_V1, (bytearray(array.tobytes()), array.dtype, array.shape, "C")
        return NotImplemented


def export_released(
    mask: Mask,
    path: str | os.PathLike,
    model_name: str,
    *,
    model: nn.Module | None = None,
    numpy1_compatible: bool = False,
) -> Path:
    """Write ``mask`` as the authors' pickle (`to_mask_dict`), atomically.

    ``model_name`` is stored as ``orig_model_name``; their helpers pass it to
    ``AutoConfig.from_pretrained``, so it should be the base model's hub id or local directory.
    With ``model`` the mask is first checked to cover exactly its maskable weights with their
    shapes, as `released.load_released_mask` requires when the file is read back.

    The pickle is ``pickle.dump(d, f, protocol=pickle.HIGHEST_PROTOCOL)``, as theirs. Its arrays
    name the module paths of the NumPy doing the writing; under NumPy 2 those cannot be loaded
    by NumPy 1.x. ``numpy1_compatible=True`` writes them as NumPy 1.x would, for a reader pinned
    to NumPy 1.x (NumPy 2 loads them too, with a DeprecationWarning, as it loads pickles that
    NumPy 1.x wrote).
    """
    if model is not None:
        check_covers(mask, model, "export_released")
    data = _mask_dict(mask, model_name, copy=None)  # pickled, never handed out: copy if needed
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if numpy1_compatible:
            _Numpy1Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(data)
        else:
            pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    log.info(
        "wrote %d mask tensors (density %.4g) for %s to %s",
        len(mask.tensors),
        mask.density,
        model_name,
        path,
    )
    return path


# --- per-head and per-neuron views -------------------------------------------------------------


def check_covers(mask: Mask, model: nn.Module, source: str = "mask") -> None:
    """Raise unless ``mask`` names exactly the model's maskable weights, with their shapes: a
    table of heads or neurons from a partial mask would silently leave weights out."""
    mask.check_matches(model, source=source)
    expected = maskable_parameters(model)
    missing = [name for name in expected if name not in mask.tensors]
    extra = [name for name in mask.tensors if name not in expected]
    if missing or extra:
        raise ValueError(
            f"{source}: the mask must cover exactly the maskable weights of "
            f"{type(model).__name__} (missing: {missing[:3]}; not maskable: {extra[:3]})"
        )


def head_view(mask: Mask, model: nn.Module) -> pd.DataFrame:
    """Kept weights per attention head: one row per layer × block (attn_q, attn_k, attn_v,
    attn_o) × head, with the parameter that stores it, kept, total and fraction.

    A head's weights are its output rows of q, k and v and its input columns of o, wherever the
    model stores them (the registry's `iter_blocks`). Under grouped-query attention attn_k and
    attn_v have one row per key/value head, numbered 0 .. num_key_value_heads - 1.
    """
    check_covers(mask, model, "head_view")
    rows = []
    for name, piece in iter_blocks(model):
        if piece.block not in ATTENTION_BLOCKS:
            continue
        part = mask.tensors[name][piece.rows, piece.cols]
        rows.append((piece.layer, piece.block, piece.head, name, int(part.sum()), part.numel()))
    rows.sort(key=lambda row: (row[0], ATTENTION_BLOCKS.index(row[1]), row[2]))
    frame = pd.DataFrame(rows, columns=["layer", "block", "head", "weight", "kept", "total"])
    frame["fraction"] = frame["kept"] / frame["total"]
    return frame


def neuron_view(mask: Mask, model: nn.Module) -> pd.DataFrame:
    """Kept weights per MLP unit: one row per layer × unit of the intermediate dimension.

    A unit is what the MLP's up projections write and its down projection reads (Geva et al.
    2021's key-value memory): its row of mlp_gate and mlp_in, its column of mlp_out, in the
    registry's [units, inputs] views (`model_unit_blocks`), so GPT-2's (in, out) Conv1D needs no
    case here. Columns: layer, unit, ``{block}_kept`` and ``{block}_total`` for each MLP block
    the family has (mlp_gate only for gated MLPs), then kept, total and fraction over them.
    """
    check_covers(mask, model, "neuron_view")
    layers: dict[int, dict[str, tuple[torch.Tensor, int]]] = {}
    for unit in model_unit_blocks(model):
        if unit.block not in MLP_BLOCKS:
            continue
        view = unit.view(mask.tensors[unit.name])  # [outputs, inputs]
        # gate/in write the MLP units (rows of their view); out reads them (columns of its view).
        across = 0 if unit.block == "mlp_out" else 1
        layers.setdefault(unit.layer, {})[unit.block] = (view.sum(dim=across), view.shape[across])
    frames = []
    for layer in sorted(layers):
        blocks = {b: layers[layer][b] for b in MLP_BLOCKS if b in layers[layer]}
        widths = {b: int(counts.numel()) for b, (counts, _) in blocks.items()}
        if len(set(widths.values())) != 1:
            raise ValueError(f"layer {layer}: MLP blocks disagree on the number of units: {widths}")
        columns: dict[str, Any] = {"layer": layer, "unit": np.arange(next(iter(widths.values())))}
        for block, (counts, total) in blocks.items():
            columns[f"{block}_kept"] = counts.numpy().astype(np.int64)
            columns[f"{block}_total"] = total
        frame = pd.DataFrame(columns)
        frame["kept"] = frame[[f"{b}_kept" for b in blocks]].sum(axis=1)
        frame["total"] = frame[[f"{b}_total" for b in blocks]].sum(axis=1)
        frames.append(frame)
    if not frames:
        raise ValueError(f"{type(model).__name__} has no MLP blocks in the registry")
    frame = pd.concat(frames, ignore_index=True)
    frame["fraction"] = frame["kept"] / frame["total"]
    return frame


# --- a permanently masked model ----------------------------------------------------------------


def masked_copy(model: nn.Module, mask: Mask) -> nn.Module:
    """A deep copy of ``model`` whose masked-out weights are exactly zero; ``model`` is untouched.

    For tools that take a plain model (``save_pretrained``, TransformerLens, nnsight, an export)
    and for long sessions, where `masking.apply_mask` would have to stay open. Zeros are written
    with ``masked_fill`` (not a product), so they are +0.0 even where a weight was negative, NaN
    or infinite.
    """
    mask.check_matches(model, source="masked_copy")
    clone = copy.deepcopy(model)
    params = dict(clone.named_parameters())
    with torch.no_grad():
        for name, keep in mask.tensors.items():
            weight = params[name]
            weight.masked_fill_(~keep.to(weight.device), 0)
    log.debug(
        "masked copy of %s: %d of %d weights kept", type(model).__name__, mask.n_kept, mask.n_total
    )
    return clone


def _copy_for(model: nn.Module, mask: Mask | None) -> nn.Module:
    return copy.deepcopy(model) if mask is None else masked_copy(model, mask)


# --- TransformerLens ---------------------------------------------------------------------------


def to_transformer_lens(
    model: nn.Module,
    mask: Mask | None = None,
    *,
    tokenizer: Any = None,
    compatibility_mode: bool = True,
    **kwargs: Any,
):
    """A TransformerLens ``TransformerBridge`` (TransformerLens ≥ 4) over a masked copy of a
    Hugging Face causal LM, built from the model's own config: no hub access, no model name.

    The weights are NOT processed. TransformerLens's fold_ln multiplies LayerNorm scales into the
    next weights and then centers them (like center_writing_weights) over d_model, and
    center_unembed shifts the logits; the processed model computes the same log-probabilities,
    but in LayerNorm models (GPT-2, Pythia) the masked-out weights are no longer zero, so the
    processed weights no longer show the subnetwork, and a mask applied to them afterwards is not
    the subnetwork. Passing any of `TL_PROCESSING_OPTIONS` is therefore an error.

    ``compatibility_mode`` (default) enables HookedTransformer's hook names and weight views
    (``blocks.0.hook_resid_post``, ``W_Q`` [layers, heads, d_model, d_head], ...) with
    ``no_processing=True``. Other ``kwargs`` go to
    ``transformer_lens.model_bridge.sources.build_bridge_from_module`` (``device``, ``dtype``,
    ``model_name``, ...). The bridge may switch the copy's attention to eager, so logits match the
    masked Hugging Face model to float tolerance (~1e-6), not bitwise.
    """
    processing = sorted(set(kwargs) & set(TL_PROCESSING_OPTIONS))
    if processing:
        raise ValueError(
            f"to_transformer_lens loads without weight processing, got {processing}: "
            "TransformerLens's processing rewrites the weights so that masked-out weights are no "
            "longer zero. If that is what you want, call bridge.enable_compatibility_mode(...) "
            "on the result yourself"
        )
    if tokenizer is not None:
        _check_tl_tokenizer(tokenizer)
    try:
        from transformer_lens.model_bridge.sources import build_bridge_from_module
    except ImportError as error:
        raise ImportError(
            "to_transformer_lens needs transformer-lens >= 4 (TransformerBridge): "
            f"pip install 'transformer-lens>=4.3' ({error})"
        ) from error
    clone = _copy_for(model, mask)
    kwargs.setdefault("model_name", getattr(model, "name_or_path", "") or type(model).__name__)
    config = getattr(clone, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no Hugging Face config for TransformerLens")
    bridge = build_bridge_from_module(
        clone, type(clone).__name__, hf_config=config, tokenizer=tokenizer, **kwargs
    )
    if compatibility_mode:
        bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    return bridge


def _check_tl_tokenizer(tokenizer: Any) -> None:
    """TransformerLens (4.3) re-loads a tokenizer that has a BOS token but does not add it,
    as ``AutoTokenizer.from_pretrained(tokenizer.name_or_path, add_bos_token=True)``; one built
    in memory has no such path, and TransformerLens fails with KeyError('name_or_path')."""
    init = getattr(tokenizer, "init_kwargs", {}) or {}
    adds_bos = init.get("add_bos_token")
    if adds_bos is None:
        adds_bos = getattr(tokenizer, "add_bos_token", False)
    reloads = getattr(tokenizer, "bos_token", None) is not None and not adds_bos
    if reloads and not init.get("name_or_path"):
        raise ValueError(
            "TransformerLens re-loads this tokenizer from its name_or_path with "
            "add_bos_token=True, and it has none (it was built in memory): save it with "
            "save_pretrained and pass AutoTokenizer.from_pretrained(that directory)"
        )


# --- nnsight -----------------------------------------------------------------------------------


def to_nnsight(model: nn.Module, mask: Mask | None = None, *, tokenizer: Any = None, **kwargs):
    """An nnsight model over a masked copy of ``model`` (``model`` itself without a mask).

    With a ``tokenizer``: ``nnsight.TransformersModel(..., task="text-generation")`` (the
    successor of the deprecated ``LanguageModel``), which traces text prompts; without one:
    ``nnsight.NNsight``, which traces tensors (``input_ids=...``). ``kwargs`` go to that class.
    Module paths are the Hugging Face model's own (``model.gpt_neox.layers[0].mlp.output``).
    To trace the original model under a mask instead, wrap it with ``NNsight`` and trace inside
    `masking.apply_mask`.
    """
    try:
        import nnsight
    except ImportError as error:
        raise ImportError(f"to_nnsight needs nnsight: pip install nnsight ({error})") from error
    target = model if mask is None else masked_copy(model, mask)
    if tokenizer is None:
        return nnsight.NNsight(target, **kwargs)
    kwargs.setdefault("task", "text-generation")
    return nnsight.TransformersModel(target, tokenizer=tokenizer, **kwargs)

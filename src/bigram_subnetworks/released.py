"""The authors' released masks (Hugging Face repos `tylerachang/bigram-subnetworks-{model}`,
files `subnetwork_dict_lambda{1,1e1,1e2}.pickle`) as our `Mask`, for parity checks.

Each file is a pickled dict {parameter name: numpy bool array}, plus the string entry
`orig_model_name`; the names are the Hugging Face model's own (the reference renames
`wrapped_model.X.weight_mask_params` to `X.weight`). A pickle can run arbitrary code when loaded,
so the file is read by a restricted unpickler that can build nothing but dicts, strings and
numpy arrays, and the result is checked to be exactly that shape before anything uses it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .architectures import maskable_parameters
from .masking import Mask

# What numpy's pickles of plain arrays refer to (numpy 1.x and 2.x module paths): array
# reconstruction, dtypes, and (protocol ≤ 2) bytes spelled as latin-1 text; none can run code.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
# Entries of the reference's dict that are not masks.
_METADATA_KEYS = {"orig_model_name"}
_PREFIXES = ("wrapped_model.",)


class _MaskUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a numpy array part")


def read_released_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: bool array} of a released mask file; anything else in it is an error naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = _MaskUnpickler(io.BytesIO(handle.read())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a released mask file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of masks, got {type(data).__name__}")
    masks = {}
    for name, value in data.items():
        if not isinstance(name, str):
            raise ValueError(f"{path}: key {name!r} is not a parameter name")
        if name in _METADATA_KEYS and isinstance(value, str):
            continue
        if not (isinstance(value, np.ndarray) and value.dtype == np.bool_):
            kind = getattr(value, "dtype", type(value).__name__)
            raise ValueError(f"{path}: {name!r} is {kind}, expected a numpy bool array")
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        masks[name] = value
    return masks


def load_released_mask(path: str | os.PathLike, model: nn.Module) -> Mask:
    """A released mask as our `Mask` for ``model``: every maskable weight must be present with
    its shape, and nothing else (embeddings, unembedding, LayerNorms and biases are never masked,
    in theirs as in ours)."""
    arrays = read_released_pickle(path)
    expected = maskable_parameters(model)
    unknown = sorted(set(arrays) - set(expected))
    missing = sorted(set(expected) - set(arrays))
    if unknown or missing:
        raise ValueError(
            f"{path}: names do not match the model's maskable weights "
            f"(not in the model: {unknown[:3]}; absent: {missing[:3]})"
        )
    mask = Mask({name: torch.from_numpy(np.ascontiguousarray(arrays[name])) for name in expected})
    mask.check_matches(model, source=str(path))
    return mask

"""The authors' released masks (Hugging Face repos `tylerachang/bigram-subnetworks-{model}`,
files `subnetwork_dict_lambda{1,1e1,1e2}.pickle`) as our `Mask`, for parity checks.

Which files exist comes from the authors' loader, `circuit_loading_utils.py` of
github.com/tylerachang/bigram-subnetworks (`RELEASED_BIGRAM_SUBNETWORKS`, unchanged since its
first commit): repo `tylerachang/bigram-subnetworks-{last part of the model name}`, with GPT-2
spelled `gpt2-small`, and one file `subnetwork_dict_lambda{λ}.pickle` per released λ, the default
listed first. `download_released` fetches one through the Hub's own cache (`hf_hub_download`), so
with ``HF_HUB_OFFLINE=1`` a file downloaded once is found again and a missing one is a clear error.

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
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from .architectures import maskable_parameters
from .hub import DOWNLOAD_HINT, HubUnavailableError

if TYPE_CHECKING:
    from torch import nn

    from .masking import Mask

# The authors' releases (circuit_loading_utils.RELEASED_BIGRAM_SUBNETWORKS): repo suffix → the
# base model, and its λ labels as spelled in the file names, the authors' default first.
RELEASED_MODELS = {
    "pythia-70m": "EleutherAI/pythia-70m",
    "pythia-160m": "EleutherAI/pythia-160m",
    "pythia-410m": "EleutherAI/pythia-410m",
    "pythia-1b": "EleutherAI/pythia-1b",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
}
RELEASED_LAMBDAS = {
    "pythia-70m": ("1e1", "1"),
    "pythia-160m": ("1e1", "1"),
    "pythia-410m": ("1e1", "1"),
    "pythia-1b": ("1e2", "1e1", "1"),
    "gpt2-small": ("1e1", "1"),
    "gpt2-medium": ("1e1", "1"),
    "gpt2-large": ("1e2", "1e1", "1"),
}
RELEASED_REPO = "tylerachang/bigram-subnetworks-{size}"
RELEASED_FILE = "subnetwork_dict_lambda{lam}.pickle"


class ReleasedFile(NamedTuple):
    repo_id: str
    filename: str


class ReleasedMaskUnavailable(HubUnavailableError):
    """A released mask file is neither in the Hugging Face cache nor downloadable now."""


def released_size(model: str) -> str:
    """The repo suffix for a model: the suffix itself (``pythia-70m``, ``gpt2-small``), or the
    base model's Hugging Face name, with or without its organisation (``EleutherAI/pythia-70m``,
    ``openai-community/gpt2``, ``gpt2``)."""
    last = model.split("/")[-1]
    size = "gpt2-small" if last == "gpt2" else last
    if size not in RELEASED_MODELS:
        raise ValueError(
            f"no released bigram subnetwork for {model!r}: released are {list(RELEASED_MODELS)}"
        )
    return size


def _lambda_value(lam: str | float) -> float:
    text = str(lam).strip().removeprefix("lambda")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"λ {lam!r} is not a number (e.g. 10, '1e1', 'lambda1e1')") from None


def released_file(model: str, lam: str | float | None = None) -> ReleasedFile:
    """(repo id, file name) of the authors' mask for ``model`` (see `released_size`) at λ.

    ``lam`` is matched by value, so our labels ("10"), the authors' ("1e1", "lambda1e1") and
    numbers (10) all name ``subnetwork_dict_lambda1e1.pickle``; None is the authors' default (the
    largest released λ). A λ they did not release is an error listing those they did.
    """
    size = released_size(model)
    labels = RELEASED_LAMBDAS[size]
    if lam is None:
        label = labels[0]
    else:
        value = _lambda_value(lam)
        found = [label for label in labels if float(label) == value]
        if not found:
            raise ValueError(
                f"no released {size} bigram subnetwork at λ = {lam!r}: released are λ "
                + ", ".join(labels)
            )
        label = found[0]
    return ReleasedFile(RELEASED_REPO.format(size=size), RELEASED_FILE.format(lam=label))


def download_released(model: str, lam: str | float | None = None, **where: Any) -> Path:
    """Path of the authors' mask file for ``model`` at λ (see `released_file`), downloaded by
    ``huggingface_hub.hf_hub_download`` into the Hub cache (``cache_dir``, default
    ``HF_HUB_CACHE``) or into ``local_dir``; a file already there is not downloaded again.

    ``where`` are `fetch_released`'s options: ``revision``, a branch, tag or commit of the
    authors' repo (None: ``main``); ``cache_dir``; ``local_dir``; ``local_files_only``. With
    ``HF_HUB_OFFLINE=1`` or ``local_files_only`` only the cache is read. A file that is not there,
    offline or with the Hub unreachable, raises `ReleasedMaskUnavailable` saying so.
    """
    return fetch_released(*released_file(model, lam), **where)


def fetch_released(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Path:
    """`download_released` for an explicit hub repo and file (a mirror, or a release the naming
    table does not know yet). A ``repo_id`` that is a local directory is read from there (a
    mirror on disk, or configs/rehearsal.yaml's files), never from the hub."""
    if Path(repo_id).is_dir():
        path = Path(repo_id) / filename
        if not path.is_file():
            raise ReleasedMaskUnavailable(f"{path} does not exist in the local directory {repo_id}")
        return path
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            local_files_only=local_files_only,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        offline = local_files_only or hub_constants.HF_HUB_OFFLINE
        where = local_dir or cache_dir or hub_constants.HF_HUB_CACHE
        why = (
            "offline (HF_HUB_OFFLINE=1 or local_files_only)"
            if offline
            else "the Hugging Face Hub could not be reached"
        )
        raise ReleasedMaskUnavailable(
            f"{repo_id}/{filename} (revision {revision or 'main'}) is not available offline: it "
            f"is not in {where} and {why}; {DOWNLOAD_HINT}"
        ) from error
    return Path(path)


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
    # Here, not at the top: the naming above (`released_file`) serves config validation,
    # which must not import torch (docs/architecture.md, "The library's tiers").
    import torch

    from .masking import Mask

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

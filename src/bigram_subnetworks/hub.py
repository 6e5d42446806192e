"""Snapshots of hub models and tokenizers into the pipeline's results, for offline compute jobs.

Only the download rules (localrules: they run on the head node, where the network is) call this
module; every compute job then loads the snapshot directory with `local_files_only`. The hub's own
cache (`HF_HOME`/`HF_HUB_CACHE`) is used as usual, so a machine that already has a model needs no
network, and `HF_HUB_OFFLINE=1` is honoured. A source may also be a local directory (a model of
your own): either one `save_pretrained` directory or a directory of revision subdirectories; or an
installed Python package that ships a GGUF file. A GGUF file (in a repository, a directory or a
package) is dequantized into the same `save_pretrained` layout (`gguf.dequantize_to_directory`).

Every snapshot is checked against the configured architecture family (`architectures`) before it
is renamed into place, and `check_families` does the same from metadata alone when the DAG is
built, so a mismatch stops the run before any job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from .architectures import REGISTRY, check_family, family_of
from .atomic import atomic_path

log = logging.getLogger(__name__)

# Configs, tokenizer files (json/txt vocabularies, sentencepiece models) and weights; never code
# (no *.py: models load with trust_remote_code=False) and no other frameworks' weights.
METADATA_PATTERNS = ("*.json", "*.txt", "*.model")
SAFETENSORS_PATTERNS = ("*.safetensors",)
# Older revisions (e.g. early Pythia branches) may only have PyTorch pickles; transformers loads
# them with torch.load(weights_only=True), which cannot run code.
PICKLE_PATTERNS = ("pytorch_model*.bin",)
TOKENIZER_PATTERNS = (
    "tokenizer*.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "*.model",
    "added_tokens.json",
)
DOWNLOAD_HINT = (
    "run the download rules where the network is reachable: `HF_HUB_OFFLINE=0 snakemake "
    "--cores 1 downloads` (with the same --configfile), or go online"
)


class HubUnavailableError(RuntimeError):
    """A hub model or tokenizer is neither in the local cache nor reachable."""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _weight_patterns(repo_id: str, revision: str) -> tuple[str, ...]:
    """Safetensors when the revision has them, else the PyTorch weights; offline both (only
    what the cache holds is used)."""
    if _offline():
        return SAFETENSORS_PATTERNS + PICKLE_PATTERNS
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(repo_id, revision=revision)
    if any(fnmatch(name, SAFETENSORS_PATTERNS[0]) for name in files):
        return SAFETENSORS_PATTERNS
    return PICKLE_PATTERNS


def _local_source(source: str, revision: str) -> Path | None:
    root = Path(source)
    if not root.is_dir():
        return None
    return root / revision if (root / revision).is_dir() else root


def _hub_snapshot(repo_id: str, revision: str, patterns: tuple[str, ...], what: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns)))
    except LocalEntryNotFoundError as error:
        raise _not_cached(f"{what} {repo_id!r} at revision {revision!r}", error) from error


def _not_cached(what: str, error: Exception) -> HubUnavailableError:
    state = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
    return HubUnavailableError(
        f"{what} is not in the local Hugging Face cache and {state}: {DOWNLOAD_HINT} ({error})"
    )


def _copy_matching(source: Path, destination: Path, patterns: tuple[str, ...]) -> list[str]:
    """Copy the files of `source` (top level) whose names match; hard links where possible (the
    hub cache holds multi-GB blobs on the same file system)."""
    destination.mkdir(parents=True)
    copied = []
    for path in sorted(source.iterdir()):
        if not path.is_file() or not any(fnmatch(path.name, p) for p in patterns):
            continue
        real = path.resolve()
        try:
            os.link(real, destination / path.name)
        except OSError:
            shutil.copy2(real, destination / path.name)
        copied.append(path.name)
    return copied


def resolve_source(hub: Mapping[str, Any]) -> str:
    """The hub id or local directory of a model's `hub` section: a `package` source is the
    directory of the installed distribution's file `gguf_file` (found without importing it)."""
    if "package" in hub:
        from .gguf import package_file

        return str(package_file(hub["package"], hub["gguf_file"]).parent)
    return hub["id"]


def _gguf_path(source: str, revision: str, gguf_file: str) -> Path:
    """The GGUF file of a local directory (or its revision subdirectory), else of a hub
    repository at ``revision`` through the hub cache."""
    local = _local_source(source, revision)
    if local is not None:
        return local / gguf_file
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source, gguf_file, revision=revision))
    except LocalEntryNotFoundError as error:
        what = f"model {source!r} file {gguf_file!r} at revision {revision!r}"
        raise _not_cached(what, error) from error


def snapshot_model(
    source: str,
    revision: str,
    directory: str | os.PathLike,
    gguf_file: str | None = None,
    arch: str | None = None,
) -> list[str]:
    """Write model + tokenizer of `source` (hub id or local directory) at `revision` into
    `directory`, atomically; returns the file names. With ``gguf_file`` the model is that file,
    dequantized. With ``arch`` the checkpoint's `model_type` must belong to that family (checked
    before anything is written). Raises `HubUnavailableError` offline when the cache lacks the
    files, and `ValueError` when the snapshot has no config or weights or is of another family."""
    if gguf_file is not None:
        from .gguf import dequantize_to_directory, model_type_of_gguf

        path = _gguf_path(source, revision, gguf_file)
        model_type = model_type_of_gguf(path)
        if arch is not None:
            check_family(arch, model_type, f"{path}")
        dequantize_to_directory(path, directory)
        files = sorted(p.name for p in Path(directory).iterdir())
        log.info("model %s (%s) -> %s: %s", path, model_type, directory, ", ".join(files))
        return files
    local = _local_source(source, revision)
    if local is not None:
        patterns = METADATA_PATTERNS + SAFETENSORS_PATTERNS + PICKLE_PATTERNS
        snapshot = local
    else:
        patterns = METADATA_PATTERNS + _weight_patterns(source, revision)
        snapshot = _hub_snapshot(source, revision, patterns, "model")
    with atomic_path(directory) as tmp:
        files = _copy_matching(snapshot, tmp, patterns)
        weights = [f for f in files if f.endswith((".safetensors", ".bin"))]
        if "config.json" not in files or not weights:
            raise ValueError(
                f"{source} at revision {revision!r} ({snapshot}) has no loadable model: "
                f"expected config.json and weights, found {files or 'nothing'}"
            )
        if arch is not None:
            check_family(arch, _config_model_type(tmp / "config.json"), f"{source}@{revision}")
    log.info("model %s@%s -> %s: %s", source, revision, directory, ", ".join(files))
    return files


def _config_model_type(path: Path) -> str | None:
    try:
        return json.loads(Path(path).read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"cannot read the model config {path}: {error}") from error


def model_type_of(
    hub: Mapping[str, Any], revision: str, snapshot: Path | None = None
) -> str | None:
    """The `model_type` of a hub model's checkpoint at ``revision``, from metadata only: its
    snapshot if already made, a local directory's config.json, a local GGUF file's header, or
    config.json in the hub cache; None when nothing local says (not downloaded yet)."""
    if snapshot is not None and (snapshot / "config.json").is_file():
        return _config_model_type(snapshot / "config.json")
    source = resolve_source(hub)
    local = _local_source(source, revision)
    gguf_file = hub.get("gguf_file")
    if local is not None:
        if gguf_file is not None:
            from .gguf import model_type_of_gguf

            return model_type_of_gguf(local / gguf_file)
        return _config_model_type(local / "config.json")
    if gguf_file is not None:
        return None  # reading the header needs the (large) file: the download rule checks it
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json", revision=revision)
    return _config_model_type(Path(cached)) if isinstance(cached, str) else None


def check_families(
    models: Mapping[str, Mapping[str, Any]], revisions: Mapping[str, str], snapshots: Mapping
) -> dict[str, str]:
    """The family of every hub model, checked (or, without `arch`, inferred) from its final
    revision's `model_type`; ``revisions`` and ``snapshots`` give each model's final revision and
    snapshot directory. Raises ValueError naming the model, its model_type and the supported
    families on a mismatch or an unsupported type, and when the family of a model without `arch`
    cannot be read before downloading."""
    families = {}
    for name, model in models.items():
        source = model["hub"].get("package") or model["hub"]["id"]
        where = f"model {name!r} ({source})"
        model_type = model_type_of(model["hub"], revisions[name], Path(snapshots[name]))
        arch = model.get("arch")
        if model_type is None:
            if arch is None:
                raise ValueError(
                    f"{where}: its architecture cannot be read before it is downloaded; give "
                    f"`arch` (one of {', '.join(REGISTRY)}) or run the download rules first"
                )
            families[name] = arch
            continue
        if arch is None:
            found = family_of(model_type)
            arch = found.name if found is not None else "?"
        families[name] = check_family(arch, model_type, f"{where}").name
    return families


def snapshot_tokenizer(source: str, revision: str, directory: str | os.PathLike) -> list[str]:
    """Write the tokenizer files of `source` at `revision` into `directory`, atomically, and
    check that they load."""
    from .tokenizer import load_tokenizer

    local = _local_source(source, revision)
    snapshot = local or _hub_snapshot(source, revision, TOKENIZER_PATTERNS, "tokenizer")
    with atomic_path(directory) as tmp:
        files = _copy_matching(snapshot, tmp, TOKENIZER_PATTERNS)
        if not files:
            raise ValueError(f"{source} at revision {revision!r} ({snapshot}) has no tokenizer")
        tokenizer = load_tokenizer(tmp)
    log.info("tokenizer %s@%s -> %s: %d tokens", source, revision, directory, len(tokenizer))
    return files

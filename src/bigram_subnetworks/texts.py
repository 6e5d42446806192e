"""Text sources: the documents a run starts from (docs/method.md §1).

Sources are the embedded default (Python's own documentation), the offline English corpus of
registry packages (`english`), local text files, and Hugging Face datasets (OSCAR/C4/FineWeb),
chosen by the config's `corpus` section (`corpus_from_config`, `documents_from_config`); a corpus
is written and read as JSON Lines, one document per line. No tokenization here (see `corpus`).
"""

from __future__ import annotations

import ast
import codecs
import functools
import gc
import hashlib
import itertools
import json
import logging
import os
import platform
import re
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import english
from .atomic import atomic_path

log = logging.getLogger(__name__)

# Stdlib directories whose docstrings are tests, vendored code or an IDE rather than documentation.
_SKIPPED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__", "pydoc_data"}
)
_MIN_DOCSTRING_WORDS = 20


def _normalise(text: str) -> str:
    """Strip trailing spaces per line and runs of blank lines; keep paragraphs and indentation."""
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return re.sub(r"\n{3,}", "\n\n", text)


def _stdlib_sources() -> list[Path]:
    """Standard-library .py files in sorted order, pruning test/IDE/vendored directories."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files: list[Path] = []
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_STDLIB_DIRS)
        files.extend(Path(root, name) for name in names if name.endswith(".py"))
    return sorted(files)


def _definitions(node: ast.AST) -> Iterator[ast.AST]:
    """Classes and functions in source order, descending only through statement bodies.

    Much faster than `ast.walk`, which would also visit every expression node.
    """
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        children = getattr(node, field, None)
        if not isinstance(children, list):
            continue
        for child in children:
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                yield child
            yield from _definitions(child)


def _module_docstrings(path: Path) -> list[str]:
    """Module, class and function docstrings of one source file, in source order, never imported."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError) as error:
        log.debug("skipping %s: %s", path, error)
        return []
    docstrings = []
    for node in [tree, *_definitions(tree)]:
        docstring = ast.get_docstring(node)
        if docstring and len(docstring.split()) >= _MIN_DOCSTRING_WORDS:
            docstrings.append(_normalise(docstring))
    return docstrings


@functools.cache
def _python_docs() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    documents = [_normalise(topics[key]) for key in sorted(topics)]
    # Parsing allocates ~1M AST nodes, which trigger full cyclic-GC passes over the whole heap
    # (slow once torch is imported); ASTs hold no reference cycles, so pausing the GC is safe.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for path in _stdlib_sources():
            documents.extend(_module_docstrings(path))
    finally:
        if was_enabled:
            gc.enable()
    # Exact duplicates (e.g. _pyio/io, _pydecimal/decimal) would otherwise leak across splits.
    unique = tuple(dict.fromkeys(doc for doc in documents if doc))
    log.info("python docs corpus: %d documents, %d characters", len(unique), sum(map(len, unique)))
    return unique


def python_docs_documents() -> list[str]:
    """The embedded default corpus: English prose that ships with every Python installation.

    One document per `pydoc` language-reference topic (sorted by key), then one per stdlib
    module/class/function docstring of at least ~20 words, parsed with `ast` (nothing is imported)
    from sorted source paths, exact duplicates removed. Deterministic for a given Python version.
    """
    return list(_python_docs())


def describe_documents(documents: Sequence[str]) -> dict[str, Any]:
    """Size and content hash of a corpus (sha256 of the documents joined by blank lines)."""
    joined = "\n\n".join(documents)
    return {
        "documents": len(documents),
        "characters": len(joined),
        "words": len(joined.split()),
        "sha256": hashlib.sha256(joined.encode("utf-8")).hexdigest(),
    }


def python_docs_provenance() -> dict[str, Any]:
    """Python version and content hash of the default corpus, for the corpus artifact's sidecar."""
    return {
        "source": "python_docs",
        "python_version": platform.python_version(),
        **describe_documents(_python_docs()),
    }


def _non_empty_texts(texts: Iterator[Any], source: str, field: str) -> list[str]:
    documents = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"field {field!r} of {source} holds {type(text).__name__}, not str")
        if text.strip():
            documents.append(text)
    return documents


def _check_utf8(path: Path, chunk_bytes: int = 1 << 24) -> None:
    """Refuse a file that is not UTF-8, naming it and the first bad byte (`datasets` would
    fail deep inside Arrow, or a lenient reader would silently change the text)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_bytes)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                position = offset + error.start - len(decoder.getstate()[0])
                raise ValueError(
                    f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                    f"offset {max(position, 0)}); convert it, e.g. `iconv -f latin1 -t utf-8`"
                ) from error
            if not chunk:
                return
            offset += len(chunk)


def local_documents(paths: Sequence[str | os.PathLike], cache_dir: str | None = None) -> list[str]:
    """Local text files, one file = one document; directories contribute their `*.txt` recursively.

    Read with `datasets`' text builder (`sample_by="document"`), the same code path as hub corpora.
    """
    import datasets

    files: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise ValueError(f"no *.txt files found under corpus directory {path}")
            files.extend(str(p) for p in found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise ValueError(f"corpus path {path} does not exist")
    if not files:
        raise ValueError("no corpus paths given")
    for file in files:
        _check_utf8(Path(file))
    # Streaming reads the files in place instead of copying them into the Arrow cache.
    dataset = datasets.load_dataset(
        "text",
        data_files=files,
        sample_by="document",
        split="train",
        streaming=True,
        cache_dir=cache_dir,
    )
    texts = (example["text"] for example in dataset)
    documents = _non_empty_texts(texts, f"local files {paths}", "text")
    log.info("local corpus: %d files, %d non-empty documents", len(files), len(documents))
    return documents


def _offline() -> bool:
    flags = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(flag in {"1", "ON", "YES", "TRUE"} for flag in flags)


def huggingface_documents(
    name: str,
    config: str | None,
    split: str,
    text_field: str,
    max_documents: int | None,
    streaming: bool = True,
    revision: str | None = None,
    data_files: str | Sequence[str] | None = None,
    cache_dir: str | None = None,
) -> list[str]:
    """The first `max_documents` texts of a `datasets` dataset (hub id, builder name or local dir).

    Streaming by default so OSCAR/C4/FineWeb are never downloaded whole. `name` may be a hub id,
    a packaged builder with `data_files` (e.g. "json"), or a local directory of data files.
    """
    import datasets

    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be positive, got {max_documents}")
    source = f"dataset {name!r} (config {config!r}, split {split!r})"
    try:
        dataset = datasets.load_dataset(
            name,
            config,
            split=split,
            streaming=streaming,
            revision=revision,
            data_files=data_files,
            cache_dir=cache_dir,
        )
    except ConnectionError as error:
        if not _offline():
            raise
        raise _not_cached_offline(source, error) from error
    texts = _field_texts(dataset, source, text_field, max_documents)
    documents = _non_empty_texts(texts, source, text_field)
    log.info("%s: %d non-empty documents", source, len(documents))
    return documents


def _not_cached_offline(source: str, error: ConnectionError) -> ConnectionError:
    """The error for a dataset that offline mode cannot reach, saying how to get it: `datasets`'
    own message does not say that the offline flags are the reason."""
    return ConnectionError(
        f"{source} is not available offline: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and "
        "it is not in the local cache. Run this rule once online (e.g. `HF_HUB_OFFLINE=0 "
        "HF_DATASETS_OFFLINE=0 snakemake --cores all results/corpus/documents.jsonl`), or "
        f"set corpus.huggingface.name to a local directory of data files ({error})"
    )


def _field_texts(
    dataset: Any, source: str, text_field: str, max_documents: int | None
) -> Iterator[Any]:
    """``text_field`` of the first ``max_documents`` examples, read lazily (a stream is read once).

    A missing field is a KeyError naming the dataset: raised here, before reading, where the
    dataset knows its columns, else by the first example that lacks it (streams of data files
    may not know their columns).
    """
    columns = dataset.column_names
    if columns is not None and text_field not in columns:
        raise KeyError(f"text field {text_field!r} not in {source}; columns: {columns}")

    def texts() -> Iterator[Any]:
        for example in itertools.islice(dataset, max_documents):
            if text_field not in example:
                raise KeyError(f"text field {text_field!r} not in {source}; keys: {list(example)}")
            yield example[text_field]

    return texts()


def corpus_from_config(
    corpus: Mapping[str, Any], artifacts: Mapping[str, str | os.PathLike] | None = None
) -> tuple[list[str], dict[str, Any]]:
    """Documents of the config's `corpus` section and their provenance (size and content hash;
    for offline_english also `sources`, each source's package, version, sha256, licence and
    counts, in the order of the documents).
    ``artifacts``: the offline English corpus's package files, by `english.ARTIFACTS` key."""
    if corpus["source"] == "offline_english":
        documents, sources = english.english_documents(
            corpus["offline_english"]["sources"], artifacts or {}
        )
        return documents, {**describe_documents(documents), "sources": sources}
    if corpus["source"] == "python_docs":
        return python_docs_documents(), python_docs_provenance()
    documents = documents_from_config(corpus)
    return documents, describe_documents(documents)


def documents_from_config(
    corpus: Mapping[str, Any], artifacts: Mapping[str, str | os.PathLike] | None = None
) -> list[str]:
    """Documents of the config's `corpus` section (`source`: python_docs, offline_english, local,
    huggingface); ``artifacts`` as in `corpus_from_config`."""
    source = corpus["source"]
    if source == "python_docs":
        return python_docs_documents()
    if source == "offline_english":
        return corpus_from_config(corpus, artifacts)[0]
    if source == "local":
        return local_documents(corpus["local_paths"])
    if source == "huggingface":
        hf = corpus["huggingface"]
        return huggingface_documents(
            hf["name"],
            hf["config"],
            split=hf["split"],
            text_field=hf["text_field"],
            max_documents=hf["max_documents"],
            revision=hf["revision"],
            data_files=hf["data_files"],
        )
    raise ValueError(f"corpus.source: unknown source {source!r}")


def write_documents(documents: Sequence[str], path: str | os.PathLike) -> None:
    """Write a corpus as JSON Lines, one `{"text": ...}` per document, atomically."""
    if not any(doc.strip() for doc in documents):
        raise ValueError(f"corpus to write to {path} is empty: no non-empty documents")
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for doc in documents:
            handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    log.info("wrote %d documents to %s", len(documents), path)


def read_documents(path: str | os.PathLike) -> list[str]:
    """Read a corpus written by `write_documents`."""
    documents = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                documents.append(json.loads(line)["text"])
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{line_number}: not a {{'text': ...}} record") from error
    if not any(doc.strip() for doc in documents):
        raise ValueError(f"corpus {path} is empty: no non-empty documents")
    return documents

"""Text sources and their tokenization into fixed-length sequences (docs/method.md §1).

Sources are the embedded default (Python's own documentation), the offline English corpus of
registry packages (`english`), local text files, and Hugging Face datasets (OSCAR/C4/FineWeb).
Tokenization cuts one stream of documents, each ended by the tokenizer's end-of-text token (and
opened by its BOS where the family is trained so), into 128-token rows with no padding, after a
document-level train/eval split. No bigram counting here (see `bigrams`).
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
import math
import os
import platform
import re
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import english
from .atomic import atomic_path

log = logging.getLogger(__name__)

# Stdlib directories whose docstrings are tests, vendored code or an IDE rather than documentation.
_SKIPPED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__", "pydoc_data"}
)
_MIN_DOCSTRING_WORDS = 20
_TOKENIZE_BATCH_DOCUMENTS = 1024  # bounds the Python-list memory of batch tokenization


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


# The end-of-text tokens of the model families, most common first (docs/method.md §1): GPT-2,
# Pythia, SmolLM2, Qwen, OLMo, Phi; Llama 3; Llama 2, Mistral, OPT; Gemma. A chat model's
# eos_token may end a turn instead (SmolLM2-Instruct and Qwen <|im_end|>, Llama 3 <|eot_id|>).
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


@dataclass(frozen=True)
class DocumentBoundaries:
    """How documents are marked in a token stream: the separator that ends every document and
    the BOS that opens it (None: none), with the reason for each (docs/method.md §1)."""

    separator: str
    separator_id: int
    separator_reason: str
    bos: str | None
    bos_id: int | None
    bos_reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _special_tokens(tokenizer: Any) -> set[str]:
    """The tokenizer's added and special tokens: a family's end-of-text token is one, while the
    same string in the ordinary vocabulary would be text (e.g. "</s>" learnt from HTML)."""
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    return set(added) | set(getattr(tokenizer, "all_special_tokens", ()))


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself opens a text with its BOS (Llama, Gemma; not GPT-2, Pythia,
    SmolLM2): the sign that its family was trained with one at every document start."""
    if tokenizer.bos_token_id is None:
        return False
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return special[:1] == [tokenizer.bos_token_id] and plain[:1] != [tokenizer.bos_token_id]


def document_boundaries(tokenizer: Any) -> DocumentBoundaries:
    """The separator and BOS of a tokenizer's documents (docs/method.md §1).

    The separator is the eos_token when it is an end-of-text token (`END_OF_TEXT_TOKENS`), else
    the first of those among the tokenizer's special tokens (SmolLM2-Instruct's eos_token is
    the chat end-of-turn <|im_end|>; its pretraining separated documents with <|endoftext|>),
    else the eos_token (logged). BOS is prepended when the tokenizer adds one itself."""
    eos = tokenizer.eos_token
    special = _special_tokens(tokenizer)
    if eos is not None and eos in END_OF_TEXT_TOKENS:
        separator, why = eos, f"the eos_token {eos!r} is an end-of-text token"
    elif found := next((token for token in END_OF_TEXT_TOKENS if token in special), None):
        separator = found
        why = (
            f"the eos_token {eos!r} is not an end-of-text token (a chat model's ends a turn); "
            f"{found!r}, the tokenizer's end-of-text token, is"
        )
    elif eos is not None:
        separator = eos
        why = (
            f"none of the end-of-text tokens {', '.join(END_OF_TEXT_TOKENS)} is a special token "
            f"of this tokenizer: its eos_token {eos!r} is used"
        )
        log.warning("documents are separated by %r: %s", separator, why)
    else:
        raise ValueError(
            "tokenizer has no eos_token and none of the end-of-text tokens "
            f"{', '.join(END_OF_TEXT_TOKENS)}: documents cannot be separated"
        )
    separator_id = tokenizer.convert_tokens_to_ids(separator)
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if not _adds_bos(tokenizer):
        bos, bos_id = None, None
        bos_why = "the tokenizer adds no BOS of its own (add_special_tokens=True): none prepended"
    elif bos_id == separator_id:
        bos, bos_id = None, None
        bos_why = "the tokenizer's BOS is the separator, which already precedes every document"
    else:
        bos_why = (
            f"the tokenizer opens every text with its BOS {bos!r}: prepended to every document"
        )
    return DocumentBoundaries(separator, separator_id, why, bos, bos_id, bos_why)


def _token_stream(
    tokenizer: Any, documents: Sequence[str], dtype: np.dtype, boundaries: DocumentBoundaries
) -> np.ndarray:
    """Token ids of all documents, each opened by BOS (if any) and ended by the separator, as
    one 1-D array."""
    end = np.array([boundaries.separator_id], dtype=dtype)
    start = None if boundaries.bos_id is None else np.array([boundaries.bos_id], dtype=dtype)
    pieces: list[np.ndarray] = []
    for first in range(0, len(documents), _TOKENIZE_BATCH_DOCUMENTS):
        batch = list(documents[first : first + _TOKENIZE_BATCH_DOCUMENTS])
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            if start is not None:
                pieces.append(start)
            pieces.append(np.asarray(ids, dtype=dtype))
            pieces.append(end)
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=dtype)


def sequences_from_texts(tokenizer: Any, texts: Sequence[str], seq_len: int) -> np.ndarray:
    """Texts as one stream (each ended by the tokenizer's end-of-text token and opened by its BOS
    where it adds one: `document_boundaries`) cut into ``[n, seq_len]`` sequences, the tail
    dropped: what the pipeline does to each split (docs/method.md §1).
    Texts too short for one sequence are an error that says how many tokens they gave."""
    boundaries = document_boundaries(tokenizer)
    texts = [text for text in texts if text.strip()]
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 2**16 else np.uint32)
    stream = _token_stream(tokenizer, texts, dtype, boundaries)
    n_rows = len(stream) // seq_len
    if n_rows == 0:
        raise ValueError(
            f"{len(texts)} texts give {len(stream)} tokens, fewer than one sequence of {seq_len}: "
            "give more text or a shorter seq_len"
        )
    return stream[: n_rows * seq_len].reshape(n_rows, seq_len)


def tokenize_documents(
    tokenizer: Any,
    documents: Sequence[str],
    seq_len: int,
    eval_fraction: float,
    seed: int,
    boundaries: DocumentBoundaries | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split documents into train/eval, tokenize, and cut each split into `[n, seq_len]` rows.

    The split is by document (seeded shuffle; eval gets ceil(eval_fraction * n_docs), at least one),
    so no text is in both. Each document is ended by the end-of-text token and opened by BOS
    where the tokenizer adds one (``boundaries``, by default `document_boundaries`); the stream
    is cut without padding and the tail shorter than `seq_len` is dropped (docs/method.md §1).

    Returns:
        (train, eval): uint16 arrays if the vocabulary fits in 16 bits, else uint32. # [n, seq_len]
    """
    boundaries = boundaries or document_boundaries(tokenizer)
    log.info(
        "documents end with %r (id %d): %s; BOS %r: %s",
        boundaries.separator,
        boundaries.separator_id,
        boundaries.separator_reason,
        boundaries.bos,
        boundaries.bos_reason,
    )
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n_docs = len(documents)
    if n_docs < 2:
        raise ValueError(f"need at least 2 documents for a train/eval split, got {n_docs}")
    n_eval = min(max(1, math.ceil(eval_fraction * n_docs)), n_docs - 1)
    order = np.random.default_rng(seed).permutation(n_docs)
    dtype = np.dtype(np.uint16 if len(tokenizer) <= 2**16 else np.uint32)

    splits = {}
    for split, indices in (("train", order[n_eval:]), ("eval", order[:n_eval])):
        stream = _token_stream(tokenizer, [documents[i] for i in indices], dtype, boundaries)
        n_rows = len(stream) // seq_len
        if n_rows == 0:
            raise ValueError(
                f"{split} split has {len(stream)} tokens, fewer than seq_len={seq_len}: "
                "no full sequence; use a larger corpus or a shorter seq_len"
            )
        splits[split] = stream[: n_rows * seq_len].reshape(n_rows, seq_len)
        log.info(
            "%s: %d documents, %d tokens -> %d sequences of %d (%d tail tokens dropped)",
            split,
            len(indices),
            len(stream),
            n_rows,
            seq_len,
            len(stream) - n_rows * seq_len,
        )
    return splits["train"], splits["eval"]


def split_training(
    train: np.ndarray,
    mask_sequences: int | None,
    lens_sequences: int,
    bigram_sequences: int | None = None,
) -> dict[str, np.ndarray]:
    """The training split's three uses, as the authors' files (docs/method.md §1, §10):

    - ``bigrams``: the first ``bigram_sequences`` sequences (None: every one), what the bigram
      table is counted on (their `fortrain` file, larger than the mask-training subset);
    - ``lens_fit``: the last ``lens_sequences`` of those, the residual-stream maps' fit set
      (their separate `tail1k` file), never shown to mask training;
    - ``mask_train``: the first ``mask_sequences`` of the rest (None: all of it), what masks are
      trained on (their `500k` subset).

    The sequences are contiguous chunks of a document-shuffled stream, so prefixes are samples.
    """
    bigrams = train[:bigram_sequences]
    available = len(bigrams) - lens_sequences
    if available < 1:
        raise ValueError(
            f"{len(bigrams)} training sequences leave none for mask training after the "
            f"{lens_sequences} held out for the residual-stream fit: lower "
            "residual_stream.fit_sequences, or use a larger corpus"
        )
    if mask_sequences is not None and mask_sequences > available:
        log.warning(
            "corpus.train_sequences %d: only %d training sequences are not held out for the "
            "residual-stream fit; mask training uses those",
            mask_sequences,
            available,
        )
    return {
        "bigrams": bigrams,
        "lens_fit": bigrams[available:],
        "mask_train": bigrams[: min(available, mask_sequences or available)],
    }


def save_tokens(array: np.ndarray, path: str | os.PathLike) -> None:
    """Save a token array as `.npy`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_tokens(path: str | os.PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a token array, checking it is a non-empty 2-D integer array with ids < vocab_size.

    Returns:
        read-only memory map. # [n_sequences, seq_len]
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"token file {path} does not exist")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"token file {path} is corrupt or truncated: {error}") from error
    if not isinstance(array, np.ndarray):
        raise ValueError(f"token file {path} is not a single .npy array")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"token file {path} holds a {array.ndim}-D {array.dtype} array, "
            "expected 2-D integers [n_sequences, seq_len]"
        )
    if array.size == 0:
        raise ValueError(f"token file {path} holds no tokens (shape {array.shape})")
    if vocab_size is not None:
        max_id, min_id = int(array.max()), int(array.min())
        if max_id >= vocab_size or min_id < 0:
            raise ValueError(
                f"token file {path} has token ids in [{min_id}, {max_id}] but vocab size is "
                f"{vocab_size}: tokens and tokenizer/model do not match"
            )
    return array

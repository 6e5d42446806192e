"""Text sources and JSONL storage (`texts`), document-level splits and token arrays (`corpus`),
on real objects."""

import math
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from bigram_subnetworks import corpus, texts
from bigram_subnetworks.tokenizer import train_bpe


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return texts.python_docs_documents()


@pytest.fixture(scope="module")
def bpe(docs):
    return train_bpe(docs[:200], vocab_size=512)


def marked_documents(docs: list[str], n: int) -> list[str]:
    """`n` documents, each opening with a unique marker word, each longer than a 32-token row."""
    return [f"zq{i}xz {docs[100 + i]}" for i in range(n)]


def markers(tokenizer, array: np.ndarray) -> set[int]:
    text = tokenizer.decode(array.reshape(-1).tolist())
    return {int(m) for m in re.findall(r"zq(\d+)xz", text)}


def test_python_docs_is_deterministic_english_and_large(docs):
    texts._python_docs.cache_clear()  # extract again, not from the in-process cache
    assert texts.python_docs_documents() == docs
    provenance = texts.python_docs_provenance()
    assert provenance["documents"] == len(docs) > 1000
    assert provenance["characters"] > 1_000_000
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["sha256"])
    words = " ".join(docs).lower().split()
    common = sum(word in {"the", "of", "a", "to", "is", "and", "in"} for word in words)
    assert common / len(words) > 0.1
    assert all(doc == doc.strip() and "\n\n\n" not in doc for doc in docs)
    assert len(set(docs)) == len(docs)


def test_local_documents_reads_files_and_directories(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("second file\n\nwith a paragraph\n", encoding="utf-8")
    (root / "sub" / "a.txt").write_text("nested ünïcode file", encoding="utf-8")
    (root / "notes.md").write_text("not a text file")
    (root / "empty.txt").write_text("  \n")
    single = tmp_path / "single.text"
    single.write_text("named explicitly", encoding="utf-8")
    got = texts.local_documents([single, root], cache_dir=str(tmp_path / "cache"))
    assert [doc.strip() for doc in got] == [
        "named explicitly",
        "second file\n\nwith a paragraph",
        "nested ünïcode file",
    ]


def test_local_documents_names_a_missing_path_or_empty_directory(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere.txt"):
        texts.local_documents([tmp_path / "nowhere.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \*.txt files found under .*empty"):
        texts.local_documents([tmp_path / "empty"])


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    strings = ["first document", "", "second document", "third document"]
    table = datasets.Dataset.from_dict({"text": strings, "id": list(range(len(strings)))})
    (root / "data").mkdir()
    table.to_parquet(str(root / "data" / "train-00000.parquet"))
    return root


@pytest.mark.parametrize("streaming", [True, False])
def test_huggingface_documents_from_local_dataset_directory(parquet_dataset, tmp_path, streaming):
    got = texts.huggingface_documents(
        str(parquet_dataset),
        None,
        split="train",
        text_field="text",
        max_documents=3,
        streaming=streaming,
        cache_dir=str(tmp_path / "cache"),
    )
    assert got == ["first document", "second document"]  # the empty example is dropped


def test_huggingface_documents_from_json_files(tmp_path):
    path = tmp_path / "docs.jsonl"
    datasets.Dataset.from_dict({"body": ["one", "two", "three"]}).to_json(str(path))
    got = texts.huggingface_documents(
        "json",
        None,
        split="train",
        text_field="body",
        max_documents=None,
        data_files=str(path),
        cache_dir=str(tmp_path / "cache"),
    )
    assert got == ["one", "two", "three"]


def test_huggingface_documents_names_a_missing_field(parquet_dataset, tmp_path):
    with pytest.raises(KeyError, match="content"):
        texts.huggingface_documents(
            str(parquet_dataset), None, "train", "content", 2, cache_dir=str(tmp_path / "cache")
        )


def test_hub_dataset_missing_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ConnectionError, match=r"'someorg/absent' .* is not available offline.*online"
    ):
        texts.huggingface_documents(
            "someorg/absent", None, "train", "text", 2, cache_dir=str(tmp_path / "cache")
        )


def test_documents_from_config_dispatches_on_source(docs):
    assert texts.documents_from_config({"source": "python_docs"}) == docs
    with pytest.raises(ValueError, match="unknown source 'ftp'"):
        texts.documents_from_config({"source": "ftp"})


def test_jsonl_round_trip_is_atomic(tmp_path):
    documents = ['quotes " and \\ backslash', "new\nlines\n\nparagraph", "ünïcode ✓", "tab\tend"]
    path = tmp_path / "out" / "documents.jsonl"
    texts.write_documents(documents, path)
    assert texts.read_documents(path) == documents
    assert path.read_text(encoding="utf-8").count("\n") == len(documents)
    assert [p.name for p in path.parent.iterdir()] == ["documents.jsonl"]


@pytest.mark.parametrize("documents", [[], ["", "  \n"]])
def test_empty_corpus_is_rejected(tmp_path, documents):
    path = tmp_path / "documents.jsonl"
    with pytest.raises(ValueError, match=r"corpus .* is empty"):
        texts.write_documents(documents, path)
    assert not path.exists()
    path.write_text('{"text": ""}\n')
    with pytest.raises(ValueError, match=f"corpus {re.escape(str(path))} is empty"):
        texts.read_documents(path)


def test_tokenize_documents_splits_by_document(docs, bpe):
    documents = marked_documents(docs, 20)
    train, evaluation = corpus.tokenize_documents(bpe, documents, 32, eval_fraction=0.2, seed=3)
    assert train.ndim == evaluation.ndim == 2
    assert train.shape[1] == evaluation.shape[1] == 32
    assert train.dtype == evaluation.dtype == np.uint16
    in_train, in_eval = markers(bpe, train), markers(bpe, evaluation)
    assert len(in_eval) == math.ceil(0.2 * 20)
    assert not in_train & in_eval
    assert in_train | in_eval == set(range(20))
    again = corpus.tokenize_documents(bpe, documents, 32, eval_fraction=0.2, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], evaluation)
    other_seed = corpus.tokenize_documents(bpe, documents, 32, eval_fraction=0.2, seed=4)
    assert markers(bpe, other_seed[1]) != in_eval


def test_tokenize_documents_separates_documents_with_eos(docs, bpe):
    documents = marked_documents(docs, 10)
    train, evaluation = corpus.tokenize_documents(bpe, documents, 16, eval_fraction=0.3, seed=0)
    eos = bpe.eos_token_id
    for array, n_docs in ((train, 7), (evaluation, 3)):
        stream = array.reshape(-1)
        assert (stream == eos).sum() in (n_docs - 1, n_docs)  # the last EOS may be in the tail
        segments = np.split(stream, np.flatnonzero(stream == eos) + 1)[:-1]
        decoded = [bpe.decode(segment[:-1].tolist()) for segment in segments]
        assert set(decoded) <= set(documents)
        assert len(set(decoded)) == len(decoded) >= n_docs - 1


def word_tokenizer(specials: list[str], bos_template: str | None = None, **tokens: str):
    """A real word-level tokenizer: the special tokens first (ids 0, 1, ...), then a-d; with
    ``bos_template`` (a special token) it opens every text with it, as Llama's does."""
    vocab = {token: i for i, token in enumerate([*specials, "a", "b", "c", "d"])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    word_level.add_special_tokens(specials)
    if bos_template is not None:
        word_level.post_processor = processors.TemplateProcessing(
            single=f"{bos_template} $A", special_tokens=[(bos_template, vocab[bos_template])]
        )
    return PreTrainedTokenizerFast(tokenizer_object=word_level, **tokens)


BOUNDARY_DOCUMENTS = ["a b", "c d", "a c", "b d"]


def test_a_chat_tokenizer_separates_documents_with_its_end_of_text_token():
    """SmolLM2-Instruct's eos_token is the chat end-of-turn <|im_end|>; its pretraining text
    was separated by <|endoftext|> (docs/method.md §1)."""
    tok = word_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        eos_token="<|im_end|>", bos_token="<|im_start|>", unk_token="<|endoftext|>",
    )  # fmt: skip
    boundaries = corpus.document_boundaries(tok)
    assert (boundaries.separator, boundaries.separator_id) == ("<|endoftext|>", 0)
    assert "'<|im_end|>' is not an end-of-text token" in boundaries.separator_reason
    assert boundaries.bos is None and boundaries.bos_id is None
    train, evaluation = corpus.tokenize_documents(tok, BOUNDARY_DOCUMENTS, 3, 0.25, seed=0)
    rows = np.concatenate([train, evaluation])
    assert (rows[:, 2] == 0).all() and not (rows == 2).any() and not (rows == 1).any()
    assert sorted(tok.decode(row[:2]) for row in rows) == sorted(BOUNDARY_DOCUMENTS)
    assert np.array_equal(
        corpus.sequences_from_texts(tok, BOUNDARY_DOCUMENTS, 3).ravel(),
        [3, 4, 0, 5, 6, 0, 3, 5, 0, 4, 6, 0],
    )


def test_a_tokenizer_that_adds_bos_opens_every_document_with_it():
    """Llama and Gemma tokenizers add BOS themselves: their families are trained with it."""
    tok = word_tokenizer(
        ["<unk>", "<s>", "</s>"], bos_template="<s>",
        eos_token="</s>", bos_token="<s>", unk_token="<unk>",
    )  # fmt: skip
    boundaries = corpus.document_boundaries(tok)
    assert (boundaries.separator, boundaries.bos, boundaries.bos_id) == ("</s>", "<s>", 1)
    assert "opens every text with its BOS '<s>'" in boundaries.bos_reason
    train, evaluation = corpus.tokenize_documents(tok, BOUNDARY_DOCUMENTS, 4, 0.25, seed=0)
    rows = np.concatenate([train, evaluation])
    assert (rows[:, 0] == 1).all() and (rows[:, 3] == 2).all()
    assert np.array_equal(
        corpus.sequences_from_texts(tok, BOUNDARY_DOCUMENTS[:2], 4), [[1, 3, 4, 2], [1, 5, 6, 2]]
    )


def test_a_gpt2_like_tokenizer_ends_documents_with_eos_and_adds_no_bos(bpe):
    boundaries = corpus.document_boundaries(bpe)
    assert boundaries.separator == bpe.eos_token == "<|endoftext|>"
    assert boundaries.separator_id == bpe.eos_token_id
    assert "is an end-of-text token" in boundaries.separator_reason
    assert boundaries.bos is None and "adds no BOS" in boundaries.bos_reason
    stream = corpus.sequences_from_texts(bpe, ["one text", "another"], 1).ravel()
    assert (stream == bpe.eos_token_id).sum() == 2 and stream[-1] == bpe.eos_token_id
    assert boundaries.as_dict()["separator"] == "<|endoftext|>"


def test_without_an_end_of_text_token_the_eos_separates_documents_with_a_warning(caplog):
    tok = word_tokenizer(["[UNK]", "[END]"], eos_token="[END]", unk_token="[UNK]")
    with caplog.at_level("WARNING", logger="bigram_subnetworks.corpus"):
        boundaries = corpus.document_boundaries(tok)
    assert (boundaries.separator, boundaries.separator_id) == ("[END]", 1)
    assert "its eos_token '[END]' is used" in boundaries.separator_reason
    assert "documents are separated by '[END]'" in caplog.text


def test_tokenize_documents_uses_uint32_for_large_vocabularies():
    vocab = {f"w{i}": i for i in range(70_000)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, eos_token="w69999")
    documents = ["w1 w66000 w2 w3", "w68000 w4 w5 w6"]
    train, evaluation = corpus.tokenize_documents(tok, documents, 5, eval_fraction=0.5, seed=0)
    assert train.dtype == evaluation.dtype == np.uint32
    assert sorted([train.tolist(), evaluation.tolist()]) == [
        [[1, 66000, 2, 3, 69999]],
        [[68000, 4, 5, 6, 69999]],
    ]


def test_tokenize_documents_errors(docs, bpe):
    with pytest.raises(ValueError, match=r"train split has \d+ tokens.*seq_len=100000"):
        corpus.tokenize_documents(bpe, docs[:4], 100_000, eval_fraction=0.25, seed=0)
    with pytest.raises(ValueError, match="at least 2 documents"):
        corpus.tokenize_documents(bpe, docs[:1], 8, eval_fraction=0.5, seed=0)
    no_eos = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, "a")))
    with pytest.raises(ValueError, match="no eos_token"):
        corpus.tokenize_documents(no_eos, ["a", "a"], 1, eval_fraction=0.5, seed=0)


def test_token_file_round_trip_is_memory_mapped(tmp_path):
    tokens = np.arange(12, dtype=np.uint16).reshape(3, 4)
    path = tmp_path / "tokens" / "train.npy"
    corpus.save_tokens(tokens, path)
    assert [p.name for p in path.parent.iterdir()] == ["train.npy"]
    loaded = corpus.load_tokens(path, vocab_size=12)
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, tokens)


def test_load_tokens_rejects_bad_files(tmp_path):
    path = tmp_path / "train.npy"
    corpus.save_tokens(np.array([[1, 2], [3, 700]], dtype=np.uint16), path)
    with pytest.raises(ValueError, match=r"700.*vocab size is 512"):
        corpus.load_tokens(path, vocab_size=512)
    truncated = tmp_path / "truncated.npy"
    corpus.save_tokens(np.zeros((100, 128), dtype=np.uint16), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"truncated.npy"):
        corpus.load_tokens(truncated)
    flat = tmp_path / "flat.npy"
    corpus.save_tokens(np.zeros(8, dtype=np.int64), flat)
    with pytest.raises(ValueError, match=r"flat.npy holds a 1-D"):
        corpus.load_tokens(flat)
    floats = tmp_path / "floats.npy"
    corpus.save_tokens(np.zeros((2, 2), dtype=np.float32), floats)
    with pytest.raises(ValueError, match="expected 2-D integers"):
        corpus.load_tokens(floats)
    with pytest.raises(FileNotFoundError, match=r"missing.npy"):
        corpus.load_tokens(tmp_path / "missing.npy")


def test_training_split_serves_bigrams_masks_and_the_lens_fit_apart():
    """The bigram counts see every training sequence, the residual-stream fit set is the tail and
    mask training never sees it (docs/method.md §1, §10: separate files in the authors' code)."""
    from bigram_subnetworks.corpus import split_training

    train = np.arange(100 * 4).reshape(100, 4)
    splits = split_training(train, mask_sequences=50, lens_sequences=10)
    assert np.array_equal(splits["bigrams"], train)
    assert np.array_equal(splits["lens_fit"], train[90:])
    assert np.array_equal(splits["mask_train"], train[:50])
    everything = split_training(train, mask_sequences=None, lens_sequences=10)
    assert np.array_equal(everything["mask_train"], train[:90])  # all but the held-out tail
    capped = split_training(train, mask_sequences=None, lens_sequences=10, bigram_sequences=40)
    assert len(capped["bigrams"]) == 40 and np.array_equal(capped["lens_fit"], train[30:40])
    assert not set(capped["lens_fit"].ravel()) & set(capped["mask_train"].ravel())
    with pytest.raises(ValueError, match="leave none for mask training after the 100 held out"):
        split_training(train, mask_sequences=None, lens_sequences=100)

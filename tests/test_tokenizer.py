"""Byte-level BPE training and tokenizer save/load, on a slice of the default corpus."""

import pytest

from bigram_subnetworks import texts, tokenizer


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return texts.python_docs_documents()[:200]


@pytest.fixture(scope="module")
def bpe(documents):
    return tokenizer.train_bpe(documents, vocab_size=512)


def test_train_bpe_is_deterministic(documents, bpe):
    again = tokenizer.train_bpe(documents, vocab_size=512)
    assert again.backend_tokenizer.to_str() == bpe.backend_tokenizer.to_str()


def test_train_bpe_vocabulary_and_special_tokens(bpe):
    assert 257 < len(bpe) <= 512
    assert bpe.eos_token == bpe.bos_token == bpe.unk_token == tokenizer.EOS_TOKEN
    assert bpe.convert_tokens_to_ids(tokenizer.EOS_TOKEN) == bpe.eos_token_id


def test_encode_decode_round_trip(bpe):
    sentence = "Return the   value of x.\n\n\tIndented: ünïcode ✓ and emoji 🐍!"
    ids = bpe(sentence, add_special_tokens=False)["input_ids"]
    assert bpe.decode(ids) == sentence
    assert len(ids) < len(sentence.encode("utf-8"))  # merges were learned
    assert bpe("x")["input_ids"] == bpe("x", add_special_tokens=False)["input_ids"]


def test_save_load_round_trip(bpe, tmp_path):
    directory = tmp_path / "bpe"
    tokenizer.save_tokenizer(bpe, directory)
    loaded = tokenizer.load_tokenizer(directory)
    sentence = "The default corpus is Python's own documentation."
    assert loaded(sentence)["input_ids"] == bpe(sentence)["input_ids"]
    assert len(loaded) == len(bpe)
    assert loaded.eos_token_id == bpe.eos_token_id


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tokenizer.load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no loadable tokenizer in .*empty"):
        tokenizer.load_tokenizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="vocab_size must exceed 256"):
        tokenizer.train_bpe(["some text"], vocab_size=256)
    with pytest.raises(ValueError, match="empty corpus"):
        tokenizer.train_bpe(["", " "], vocab_size=300)

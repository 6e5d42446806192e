"""Bigram counts, MLE probabilities and backoff on a hand-checked corpus (docs/method.md §2)."""

import itertools

import numpy as np
import pytest

from bigram_subnetworks.bigrams import BigramCounts, BigramModel

# Vocabulary of 5; token 4 never occurs as a context, token 3 never occurs at all.
SEQUENCES = np.array([[0, 1, 0, 2], [1, 0, 1, 1], [2, 0, 1, 4]])
V = 5


def test_counts_by_hand():
    counts = BigramCounts.count(SEQUENCES, V)
    dense = counts.pairs.toarray()
    assert dense.shape == (V + 1, V)
    expected = np.zeros((V + 1, V), dtype=np.int64)
    for seq in SEQUENCES:
        expected[V, seq[0]] += 1  # sequence start
        for a, b in itertools.pairwise(seq):
            expected[a, b] += 1
    np.testing.assert_array_equal(dense, expected)
    assert dense[0, 1] == 3 and dense[1, 0] == 2 and dense[V, 1] == 1
    np.testing.assert_array_equal(counts.unigrams, [4, 5, 2, 0, 1])


def test_chunked_counting_matches_one_pass():
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, 50, size=(101, 9))
    one = BigramCounts.count(seqs, 50)
    for chunk_rows, threads in ((7, 1), (7, 2), (1000, 3)):
        chunked = BigramCounts.count(seqs, 50, chunk_rows=chunk_rows, threads=threads)
        assert (one.pairs != chunked.pairs).nnz == 0
        assert chunked.pairs.has_canonical_format
        np.testing.assert_array_equal(one.unigrams, chunked.unigrams)
    np.testing.assert_array_equal(one.unigrams, np.bincount(seqs.ravel(), minlength=50))


@pytest.mark.parametrize("setting", [{"chunk_rows": 0}, {"threads": 0}])
def test_counting_rejects_bad_settings(setting):
    with pytest.raises(ValueError, match="must be ≥ 1"):
        BigramCounts.count(SEQUENCES, V, **setting)


def test_probabilities_and_backoff():
    model = BigramModel(BigramCounts.count(SEQUENCES, V))
    rows = model.probs.toarray()
    seen = rows.sum(axis=1)
    np.testing.assert_allclose(seen[model.seen], 1.0)
    assert not model.seen[3] and not model.seen[4]
    # P(1|0) = 3/4 (0→1 three times, 0→2 once); unseen continuation of a seen context is 0.
    np.testing.assert_allclose(model.pair_probabilities([0, 0, 0], [1, 2, 3]), [0.75, 0.25, 0.0])
    # Unseen context 4 backs off to the unigram distribution, which sums to one.
    unigram = np.array([4, 5, 2, 0, 1]) / 12
    np.testing.assert_allclose(model.pair_probabilities([4, 4], [1, 2]), unigram[[1, 2]])
    np.testing.assert_allclose(model.backoff_row().sum(), 1.0)


def test_uniform_backoff_without_unigrams():
    empty = BigramCounts.count(np.zeros((0, 4), dtype=np.int64), 6)
    model = BigramModel(empty)
    np.testing.assert_allclose(model.pair_probabilities([2], [3]), [1 / 6])


def test_surprisal_is_infinite_only_for_unseen_pairs():
    model = BigramModel(BigramCounts.count(SEQUENCES, V))
    bits = model.surprisal(np.array([[0, 1, 0, 3]]))
    np.testing.assert_allclose(bits[0, :2], [-np.log2(0.75), -np.log2(2 / 4)])
    assert np.isinf(bits[0, 2])


def test_smoothed_baseline_is_finite_and_better_than_unigram():
    rng = np.random.default_rng(0)
    successor = rng.permutation(20)
    seqs = np.empty((200, 12), dtype=np.int64)
    seqs[:, 0] = rng.integers(0, 20, 200)
    for t in range(1, 12):
        noisy = rng.random(200) < 0.2
        seqs[:, t] = np.where(noisy, rng.integers(0, 20, 200), successor[seqs[:, t - 1]])
    model = BigramModel(BigramCounts.count(seqs[:150], 20))
    baselines = model.baselines(seqs[150:])
    assert np.isfinite(baselines["bigram_loss"])
    assert baselines["bigram_loss"] < baselines["unigram_loss"]


def test_ids_beyond_the_vocabulary_are_rejected():
    with pytest.raises(ValueError, match="token id 7 ≥ vocabulary size 5"):
        BigramCounts.count(np.array([[1, 7]]), 5)


def test_save_load_round_trip_and_corrupt_file(tmp_path):
    counts = BigramCounts.count(SEQUENCES, V)
    counts.save(tmp_path / "counts.npz")
    loaded = BigramCounts.load(tmp_path / "counts.npz")
    assert (loaded.pairs != counts.pairs).nnz == 0
    np.testing.assert_array_equal(loaded.unigrams, counts.unigrams)
    data = (tmp_path / "counts.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read bigram counts .*truncated\.npz"):
        BigramCounts.load(tmp_path / "truncated.npz")


def test_counts_beyond_uint32_pair_codes():
    """V = 70,000: (V+1)·V exceeds 2³², so pair codes are uint64; counts are the same."""
    seqs = np.array([[69_999, 0, 69_999], [5, 69_999, 0]])
    dense = BigramCounts.count(seqs, 70_000, threads=2, chunk_rows=1).pairs
    assert dense[70_000, 69_999] == 1 and dense[70_000, 5] == 1
    assert dense[69_999, 0] == 2 and dense[0, 69_999] == 1 and dense[5, 69_999] == 1
    assert dense.sum() == seqs.size

"""What a bigram r is read against (docs/method.md §6): the table's floor, generalizing and copy
references checked by hand on a tiny corpus, Spearman's rho, the block standard errors, and the
context-free r of tiny real models against a direct loop over 1-token inputs."""

import numpy as np
import pytest
import scipy.stats
import torch

from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.evaluation import (
    STATISTICS,
    bigram_correlations,
    context_free_correlations,
    context_free_surprisal,
    jackknife_se,
    pearson,
    sequence_blocks,
    spearman,
)
from bigram_subnetworks.references import (
    SmoothedBigramModel,
    bigram_references,
    ney_discount,
    unigram_surprisal,
)
from bigram_subnetworks.tables import STATISTICS as TABLE_STATISTICS

from conftest import VOCAB, make_tiny_model

# Two training sequences over 4 tokens. Bigrams, with the start context 4:
#   (4,0)×2 (0,1)×2 (1,0) (0,2) (1,1) (1,3): n₁ = 4, n₂ = 2, so D = 4 / (4 + 2·2) = 1/2.
# Unigrams (every token): 0×3, 1×3, 2×1, 3×1 of 8; add-one: (4, 4, 2, 2) / 12.
TRAIN = np.array([[0, 1, 0, 2], [0, 1, 1, 3]])
V = 4
ADD_ONE = np.array([4, 4, 2, 2]) / 12
# P(v|u) = max(c(u,v) − ½, 0)/c(u) + ½·N₁₊(u)/c(u)·P₁(v):
#   u = 0 (c 3, N₁₊ 2): v=1: 1.5/3 + ⅓·4/12 = 11/18; v=2: 0.5/3 + ⅓·2/12 = 4/18;
#                       v=0: ⅓·4/12 = 2/18; v=3: ⅓·2/12 = 1/18
#   u = 1 (c 3, N₁₊ 3): v=0,1: 1/6 + ½·4/12 = 1/3; v=3: 1/6 + ½·2/12 = 1/4; v=2: 1/12
#   u = 2, 3 (unseen): P₁
#   u = 4 (start; c 2, N₁₊ 1): v=0: 1.5/2 + ¼·4/12 = 10/12; v=1: 1/12; v=2, 3: 1/24
SMOOTHED = np.array(
    [
        [2 / 18, 11 / 18, 4 / 18, 1 / 18],
        [1 / 3, 1 / 3, 1 / 12, 1 / 4],
        ADD_ONE,
        ADD_ONE,
        [10 / 12, 1 / 12, 1 / 24, 1 / 24],
    ]
)
# Eval: next tokens 1, 3, 2 | 0, 2, 0 after contexts 0, 1, 3 | 1, 0, 2.
EVAL = np.array([[0, 1, 3, 2], [1, 0, 2, 0]])


def bits(probabilities) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log2(np.asarray(probabilities, dtype=float)).reshape(2, 3)


def test_absolute_discounting_by_hand():
    counts = BigramCounts.count(TRAIN, V)
    assert ney_discount(counts) == 0.5
    model = SmoothedBigramModel(counts)
    contexts, nexts = np.divmod(np.arange(5 * V), V)
    table = model.pair_probabilities(contexts, nexts).reshape(5, V)
    np.testing.assert_allclose(table, SMOOTHED)
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    np.testing.assert_allclose(unigram_surprisal(counts, EVAL), bits(ADD_ONE[[1, 3, 2, 0, 2, 0]]))


def test_floor_and_copy_by_hand():
    counts = BigramCounts.count(TRAIN, V)
    # The table (MLE; contexts 2 and 3 unseen → the MLE unigram (3, 3, 1, 1)/8): all finite.
    table = bits([2 / 3, 1 / 3, 1 / 8, 1 / 3, 1 / 3, 3 / 8])
    np.testing.assert_allclose(BigramModel(counts).surprisal(EVAL), table)
    floor = bits([4 / 12, 2 / 12, 2 / 12, 4 / 12, 2 / 12, 4 / 12])
    copy = bits([11 / 18, 1 / 4, 2 / 12, 1 / 3, 4 / 18, 4 / 12])
    found = bigram_references(TRAIN, counts, EVAL, n_blocks=2).correlations
    for name, predictor in (("floor", floor), ("copy", copy)):
        expected = np.corrcoef(predictor.ravel(), table.ravel())[0, 1]
        assert found[name]["r_drop_inf"] == pytest.approx(expected)
        assert found[name]["r_clip_inf"] == pytest.approx(expected)  # no infinite surprisal
        rho = scipy.stats.spearmanr(predictor.ravel(), table.ravel()).statistic
        assert found[name]["rho_drop_inf"] == pytest.approx(rho)


def test_generalizing_reference_by_hand():
    """Half A is the first sequence, B the second. Every bigram of a half is seen once (n₂ = 0,
    D = 1): its smoothed model is its add-one unigram (N₁₊(u) = c(u)). Each half's model is
    scored against the other half's MLE table, where unseen bigrams are infinite."""
    counts = BigramCounts.count(TRAIN, V)
    model_a = bits(np.array([3, 2, 2, 1])[[1, 3, 2, 0, 2, 0]] / 8)  # A's unigrams 2, 1, 1, 0
    model_b = bits(np.array([2, 3, 1, 2])[[1, 3, 2, 0, 2, 0]] / 8)  # B's unigrams 1, 2, 0, 1
    # B's table: P(1|0) = 1, P(3|1) = ½, P(0|1) = P(2|0) = 0; unseen 2, 3 → B's unigrams /4.
    table_b = bits([1, 1 / 2, 0, 0, 0, 1 / 4])
    # A's table: P(1|0) = P(2|0) = ½, P(3|1) = 0, P(0|1) = 1; unseen 2, 3 → A's unigrams /4.
    table_a = bits([1 / 2, 0, 1 / 4, 1, 1 / 2, 2 / 4])
    references = bigram_references(TRAIN, counts, EVAL, n_blocks=2)
    assert references.discounts == {"table": 0.5, "half_a": 1.0, "half_b": 1.0}
    assert references.halves == (1, 1)
    found = references.correlations

    def drop_inf(model, table):
        finite = np.isfinite(table.ravel())
        return np.corrcoef(model.ravel()[finite], table.ravel()[finite])[0, 1]

    a_to_b, b_to_a = drop_inf(model_a, table_b), drop_inf(model_b, table_a)
    assert found["generalizing_a_to_b"]["r_drop_inf"] == pytest.approx(a_to_b)
    assert found["generalizing_b_to_a"]["r_drop_inf"] == pytest.approx(b_to_a)
    assert found["generalizing"]["r_drop_inf"] == pytest.approx((a_to_b + b_to_a) / 2)
    clipped = np.where(np.isinf(table_b), 2.0, table_b)  # +inf → the largest finite, 2 bits
    r = np.corrcoef(model_a.ravel(), clipped.ravel())[0, 1]
    assert found["generalizing_a_to_b"]["r_clip_inf"] == pytest.approx(r)


def test_references_refuse_a_table_of_other_tokens():
    counts = BigramCounts.count(TRAIN[:1], V)
    with pytest.raises(ValueError, match="not counted on them"):
        bigram_references(TRAIN, counts, EVAL)


def test_spearman_is_pearson_of_mean_ranks():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([1.0, 4, 9, 16])) == pytest.approx(1.0)
    a = np.array([3.0, 1, 4, 1, 5, 9, 2, 6, 5, 3])
    b = np.array([2.0, 7, 1, 8, 2, 8, 1, 8, 2, 8])  # ties on both sides
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
    assert np.isnan(spearman(np.array([1.0, np.nan, 2]), np.array([1.0, 2, 3])))


def test_the_tables_name_every_statistic_the_evaluation_makes():
    assert set(TABLE_STATISTICS) == set(STATISTICS)
    found = bigram_correlations(np.arange(8.0), np.arange(8.0) ** 2)
    assert set(found) == {*STATISTICS, *(f"{s}_se" for s in STATISTICS), "fraction_inf_bigram"}


def test_blocks_are_contiguous_runs_of_sequences():
    np.testing.assert_array_equal(sequence_blocks((5, 2), 2), [0] * 6 + [1] * 4)
    np.testing.assert_array_equal(sequence_blocks((3,), 10), [0, 1, 2])  # 1-D: token rows


def test_jackknife_of_a_mean_is_the_standard_error_of_the_block_means():
    """Blocks of tokens 1 1 | 3 3 | 5 5 | 7 7: the mean leaving one block out is 5, 13/3, 11/3,
    3 (mean 4); √(¾ · (1 + 1/9 + 1/9 + 1)) = √(5/3), the block means' std (√(20/3)) / √4."""
    values = np.array([1.0, 1, 3, 3, 5, 5, 7, 7])
    blocks = sequence_blocks((4, 2), 4)
    left_out = [values[blocks != b].mean() for b in range(4)]
    np.testing.assert_allclose(left_out, [5, 13 / 3, 11 / 3, 3])
    assert jackknife_se(left_out) == pytest.approx(np.sqrt(5 / 3))
    assert jackknife_se(left_out) == pytest.approx(np.std([1, 3, 5, 7], ddof=1) / 2)
    assert np.isnan(jackknife_se([0.5]))


def test_block_standard_error_of_r():
    rng = np.random.default_rng(0)
    one = rng.exponential(3.0, size=(4, 10))
    noisy = one + rng.normal(0.0, 1.0, size=one.shape)
    # Every block the same sequences: leaving any one out changes nothing, the SE is 0.
    same = bigram_correlations(np.tile(noisy, (5, 1)), np.tile(one, (5, 1)), n_blocks=5)
    assert same["r_drop_inf_se"] == pytest.approx(0.0, abs=1e-12)
    assert same["r_drop_inf"] == pytest.approx(pearson(noisy.ravel(), one.ravel()))
    # Otherwise: the jackknife of r with each block of 4 sequences left out, by direct loop.
    model = rng.exponential(3.0, size=(20, 10))
    table = model + rng.normal(0.0, 1.0, size=model.shape)
    table[0, 0] = np.inf  # dropped by drop-inf, clipped by clip-inf
    found = bigram_correlations(model, table, n_blocks=5)
    clipped = np.where(np.isinf(table), table[np.isfinite(table)].max(), table)
    left_out = [
        pearson(np.delete(model, rows, 0).ravel(), np.delete(clipped, rows, 0).ravel())
        for rows in np.array_split(np.arange(20), 5)
    ]
    k = len(left_out)
    expected = np.sqrt((k - 1) / k * np.sum((np.array(left_out) - np.mean(left_out)) ** 2))
    assert found["r_clip_inf_se"] == pytest.approx(expected)
    assert 0 < found["r_drop_inf_se"] < 0.1


def direct_context_free_bits(model, tokens, bos=None) -> np.ndarray:
    """The model fed each current token alone (after ``bos``), one forward pass per position."""
    out = np.empty((tokens.shape[0], tokens.shape[1] - 1))
    with torch.no_grad():
        for i, row in enumerate(tokens):
            for t in range(tokens.shape[1] - 1):
                ids = [int(row[t])] if bos is None else [bos, int(row[t])]
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
                out[i, t] = -torch.log_softmax(logits, -1)[int(row[t + 1])] / np.log(2)
    return out


def test_context_free_r_equals_a_direct_loop_over_one_token_inputs(arch, random_tokens):
    model = make_tiny_model(arch)
    tokens = random_tokens[:6]
    bigrams = BigramModel(BigramCounts.count(random_tokens, VOCAB))
    direct = direct_context_free_bits(model, tokens)
    # 7 distinct current tokens per pass: batches end in the middle of the positions' contexts.
    batched = context_free_surprisal(model, tokens, VOCAB, batch_size=7)
    np.testing.assert_allclose(batched, direct, rtol=1e-5)
    found = context_free_correlations(model, tokens, bigrams, batch_size=7)
    expected = bigram_correlations(direct, bigrams.surprisal(tokens))
    for name in ("r_drop_inf", "r_clip_inf", "rho_drop_inf", "r_drop_inf_se"):
        assert found[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-7)
    with_bos = context_free_surprisal(model, tokens[:2], VOCAB, batch_size=64, bos=5)
    np.testing.assert_allclose(with_bos, direct_context_free_bits(model, tokens[:2], 5), rtol=1e-5)
    assert not np.allclose(with_bos, direct[:2])

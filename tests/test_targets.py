"""The sparse bigram target equals the dense-target cross-entropy; the teacher target's CE with
an all-kept mask equals the teacher's entropy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bigram_subnetworks.architectures import maskable_parameters
from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask, masked_forward
from bigram_subnetworks.targets import BigramTarget, TeacherTarget, truncate_logits

from conftest import VOCAB, make_tiny_model


def _dense_cross_entropy(logits, ids, bigrams):
    """The reference approach: a dense [batch, seq, V] float64 target built per batch."""
    probs = bigrams.probs.toarray()
    dense = np.where(bigrams.seen[:, None], probs, bigrams.backoff_row()[None, :])
    target = torch.from_numpy(dense[ids.numpy()])
    log_q = F.log_softmax(logits.double(), dim=-1)  # float64, as the reference
    return -(target * log_q).sum(-1).mean()


def test_sparse_equals_dense_including_backoff_rows(arch):
    # Tokens ≥ 48 never appear in training, so they are unseen contexts (unigram backoff).
    rng = np.random.default_rng(0)
    train = rng.integers(0, 48, size=(64, 16))
    bigrams = BigramModel(BigramCounts.count(train, VOCAB))
    assert not bigrams.seen[50] and bigrams.seen[VOCAB]  # start context row is present
    model = make_tiny_model(arch)
    ids = torch.from_numpy(rng.integers(0, VOCAB, size=(4, 16)))
    logits = model(input_ids=ids).logits
    sparse = BigramTarget(bigrams).cross_entropy(logits, ids)
    dense = _dense_cross_entropy(logits, ids, bigrams)
    assert torch.isclose(sparse.double(), dense, rtol=1e-5)
    # With the sequence-start context V in place of each sequence's first context.
    contexts = ids.clone()
    contexts[:, 0] = VOCAB
    sparse = BigramTarget(bigrams).cross_entropy_given(logits, contexts)
    dense = _dense_cross_entropy(logits, contexts, bigrams)
    assert torch.isclose(sparse.double(), dense, rtol=1e-5)


def test_dense_rows_helper_matches_probabilities():
    train = np.random.default_rng(1).integers(0, 30, size=(20, 8))
    bigrams = BigramModel(BigramCounts.count(train, VOCAB))
    rows = BigramTarget(bigrams).dense_rows(torch.tensor([0, 40]))
    torch.testing.assert_close(rows.sum(-1), torch.ones(2))
    torch.testing.assert_close(rows[1], torch.as_tensor(bigrams.unigram, dtype=torch.float32))


def test_teacher_cross_entropy_with_full_mask_is_teacher_entropy(arch):
    model = make_tiny_model(arch)
    ids = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(0))
    full = Mask.full({n: w.shape for n, w in maskable_parameters(model).items()})
    logits = masked_forward(model, full.tensors, input_ids=ids).logits
    xent = TeacherTarget(model, VOCAB).cross_entropy(logits, ids)
    p = F.softmax(model(input_ids=ids).logits, dim=-1)
    entropy = -(p * p.log()).sum(-1).mean()
    assert torch.isclose(xent, entropy, rtol=1e-6)


def test_truncation_drops_padded_logit_columns():
    logits = torch.randn(2, 3, 10)
    assert truncate_logits(logits, 7).shape == (2, 3, 7)
    try:
        truncate_logits(logits, 11)
    except ValueError as err:
        assert "10 logits for a 11-token vocabulary" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_sparse_gradient_equals_dense_gradient(arch):
    rng = np.random.default_rng(2)
    bigrams = BigramModel(BigramCounts.count(rng.integers(0, 48, size=(64, 16)), VOCAB))
    ids = torch.from_numpy(rng.integers(0, VOCAB, size=(4, 16)))
    logits = make_tiny_model(arch)(input_ids=ids).logits.detach()
    sparse_logits = logits.clone().requires_grad_()
    BigramTarget(bigrams).cross_entropy(sparse_logits, ids).backward()
    dense_logits = logits.double().requires_grad_()
    _dense_cross_entropy(dense_logits, ids, bigrams).backward()
    torch.testing.assert_close(sparse_logits.grad.double(), dense_logits.grad, rtol=1e-5, atol=1e-9)


def test_log_prob_path_equals_logit_path(arch):
    """Evaluation hands targets the log-probabilities it already has; the CE is the same."""
    rng = np.random.default_rng(3)
    bigrams = BigramModel(BigramCounts.count(rng.integers(0, 48, size=(64, 16)), VOCAB))
    model = make_tiny_model(arch)
    ids = torch.from_numpy(rng.integers(0, VOCAB, size=(4, 16)))
    with torch.no_grad():
        logits = model(input_ids=ids).logits * 3  # sharper than the random model's own output
        log_q = F.log_softmax(logits, dim=-1)
        for target in (BigramTarget(bigrams), TeacherTarget(model, VOCAB)):
            assert torch.isclose(
                target.cross_entropy_log_probs(log_q, ids),
                target.cross_entropy(logits, ids),
                rtol=1e-6,
            )


def test_reused_buffers_stay_correct_and_guarded(arch):
    """Buffers are reused across calls of different sizes; a second call before the first one's
    backward overwrites what that backward needs, and autograd refuses it."""
    rng = np.random.default_rng(4)
    bigrams = BigramModel(BigramCounts.count(rng.integers(0, 48, size=(64, 16)), VOCAB))
    target = BigramTarget(bigrams)
    logits = make_tiny_model(arch)(input_ids=torch.from_numpy(rng.integers(0, VOCAB, (4, 16))))
    logits = logits.logits.detach()
    for rows in (4, 1, 3):  # grow, shrink, grow within capacity
        ids = torch.from_numpy(rng.integers(0, VOCAB, size=(rows, 16)))
        dense = _dense_cross_entropy(logits[:rows], ids, bigrams)
        assert torch.isclose(target.cross_entropy(logits[:rows], ids).double(), dense, rtol=1e-5)
    first = target.cross_entropy(logits.clone().requires_grad_(), ids.repeat(2, 1)[:4])
    target.cross_entropy(logits.clone().requires_grad_(), ids.flip(0).repeat(2, 1)[:4])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()

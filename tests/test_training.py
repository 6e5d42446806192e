"""Mask training: gradients reach only the scores, the loss falls, λ controls the size, and the
stability check accepts recovered spikes only."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from bigram_subnetworks.bigrams import BigramCounts, BigramModel
from bigram_subnetworks.masking import Mask
from bigram_subnetworks.size_matching import SEARCH_COLUMNS, match_size
from bigram_subnetworks.targets import BigramTarget, TeacherTarget
from bigram_subnetworks.training import (
    HISTORY_COLUMNS,
    MaskTrainingConfig,
    TrainResult,
    ending,
    fit_mask,
    is_stable,
    train_mask,
)

from conftest import VOCAB, make_tiny_model

CONFIG = MaskTrainingConfig(
    lam=1.0,
    learning_rate=0.05,
    weight_decay=0.01,
    beta_growth=1.05,
    max_steps=40,
    batch_size=16,
    grad_accum=2,
    early_stop_fraction=0.01,
    attempts=1,
    spike_window=10,
    spike_absolute=0.25,
    spike_relative=1.25,
    spike_recovery_steps=5,
    log_every=10,
    seed=0,
)


@pytest.fixture
def target(cyclic_tokens):
    return BigramTarget(BigramModel(BigramCounts.count(cyclic_tokens, VOCAB)))


def test_base_weights_are_frozen_and_bit_identical(arch, cyclic_tokens, target):
    model = make_tiny_model(arch)
    before = {n: p.clone() for n, p in model.named_parameters()}
    train_mask(model, target, cyclic_tokens, dataclasses.replace(CONFIG, max_steps=3))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())


def test_loss_decreases_and_history_is_complete(arch, cyclic_tokens, target):
    result = train_mask(make_tiny_model(arch), target, cyclic_tokens, CONFIG)
    history = result.history
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert len(history) == result.steps
    first, last = history["xent"].iloc[:5].mean(), history["xent"].iloc[-5:].mean()
    assert last < first - 0.05
    assert np.all(np.diff(history["beta"]) > 0)


def test_higher_lambda_keeps_fewer_weights(arch, cyclic_tokens, target):
    low = train_mask(
        make_tiny_model(arch), target, cyclic_tokens, dataclasses.replace(CONFIG, lam=0.0)
    )
    high = train_mask(
        make_tiny_model(arch), target, cyclic_tokens, dataclasses.replace(CONFIG, lam=100.0)
    )
    assert high.mask.density < low.mask.density - 0.2


def test_same_seed_gives_the_same_mask(cyclic_tokens, target):
    config = dataclasses.replace(CONFIG, max_steps=10)
    one = train_mask(make_tiny_model("gpt2"), target, cyclic_tokens, config)
    two = train_mask(make_tiny_model("gpt2"), target, cyclic_tokens, config)
    assert one.mask.equals(two.mask)
    assert one.history["xent"].tolist() == two.history["xent"].tolist()


def test_sentinels_need_no_training(cyclic_tokens, target):
    model = make_tiny_model("gpt_neox")
    full = fit_mask(model, target, cyclic_tokens, CONFIG, label="full")
    empty = fit_mask(model, target, cyclic_tokens, CONFIG, label="empty")
    assert full.mask.density == 1.0 and empty.mask.density == 0.0
    assert full.steps == 0 and len(full.history) == 0
    assert full.ended == "sentinel" and full.converged


def _row(xent=1.0, on=0.05, undecided=0.2):
    values = {"xent": xent, "on_fraction": on, "undecided_fraction": undecided}
    return tuple(values.get(column, 0.0) for column in HISTORY_COLUMNS)


@pytest.mark.parametrize(
    ("last", "ended", "to_on"),
    [
        (_row(undecided=0.2), "max_steps", 4.0),  # 400× the kept, where the rule asks < 1%
        (_row(undecided=0.0004), "early_stop", 0.008),
        (_row(undecided=0.0005), "max_steps", 0.01),  # the rule is strict: < 1%, not ≤
        (_row(on=0.0, undecided=0.0), "early_stop", 0.0),  # all off, nothing undecided
        (_row(on=0.0, undecided=0.1), "max_steps", float("inf")),
        (_row(xent=float("nan"), undecided=0.0), "non_finite", 0.0),
    ],
)
def test_ending_reads_the_early_stop_rule_from_the_last_step(last, ended, to_on):
    got, undecided, ratio = ending([_row(), last], CONFIG)
    assert got == ended
    assert undecided == last[HISTORY_COLUMNS.index("undecided_fraction")]
    assert ratio == pytest.approx(to_on)


def test_a_mask_that_runs_out_of_steps_is_reported_unconverged(cyclic_tokens, target, caplog):
    """max_steps before the masks are decided: `stable` (no spike) but not converged, with the
    undecided share recorded and a warning naming the fix."""
    short = dataclasses.replace(CONFIG, max_steps=3)
    with caplog.at_level("WARNING", logger="bigram_subnetworks.training"):
        result = train_mask(make_tiny_model("llama"), target, cyclic_tokens, short)
    assert result.stable and result.steps == 3
    assert result.ended == "max_steps" and not result.converged
    undecided = result.history["undecided_fraction"].iloc[-1]
    assert result.undecided_fraction == undecided > 0.5  # β ≈ 1.16: almost every σ(βs) ≈ 0.5
    assert result.summary()["converged"] is False
    assert "did not converge: max_steps 3 ran out" in caplog.text


def test_a_mask_decided_before_max_steps_ends_by_the_early_stop_rule(cyclic_tokens, target):
    fast = dataclasses.replace(CONFIG, beta_growth=1.5, max_steps=200)
    result = train_mask(make_tiny_model("gpt2"), target, cyclic_tokens, fast)
    assert result.ended == "early_stop" and result.converged and result.steps < 200
    last = result.history.iloc[-1]
    assert last["undecided_fraction"] < fast.early_stop_fraction * last["on_fraction"] or (
        last["undecided_fraction"] == 0
    )
    assert result.undecided_to_on < fast.early_stop_fraction


def test_config_rejects_indivisible_accumulation():
    with pytest.raises(ValueError, match="batch_size 15 is not divisible by grad_accum 2"):
        dataclasses.replace(CONFIG, batch_size=15)


def test_config_rejects_an_unknown_precision():
    message = r"precision must be one of \('auto', 'bf16', 'fp32'\), got 'fp16'"
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CONFIG, precision="fp16")


@pytest.mark.parametrize(
    ("curve", "stable"),
    [
        (np.linspace(4, 2, 200), True),
        (np.r_[np.full(50, 3.0), 5.0, np.full(149, 2.9)], True),  # spike, recovered early
        (np.r_[np.full(150, 3.0), 5.0, np.full(49, 2.9)], False),  # recovered too late
        (np.r_[np.full(50, 3.0), np.full(150, 4.0)], False),  # jumps and stays up
        (np.r_[np.full(50, 3.0), np.nan, np.full(149, 2.9)], False),
    ],
)
def test_stability_check(curve, stable):
    ok, reason = is_stable(curve, window=10, absolute=0.25, relative=1.25, recovery_steps=100)
    assert ok is stable, reason


def test_size_matching_bisects_towards_the_goal(cyclic_tokens):
    """Optimal-target masks: bisection on λ finds one whose size is within tolerance of the
    goal, every step inside the bracket, and larger λ keeps fewer weights."""
    model = make_tiny_model("gpt_neox")
    teacher = TeacherTarget(model, VOCAB)
    cfg = dataclasses.replace(CONFIG, max_steps=30)

    def train(lam):
        return train_mask(model, teacher, cyclic_tokens, dataclasses.replace(cfg, lam=lam))

    goal = train(10.0).mask.n_kept
    found = match_size(train, goal, bracket=(0.5, 500.0), tolerance=0.2, max_iterations=6)
    assert list(found.search.columns) == list(SEARCH_COLUMNS)
    assert (found.search["source"] == "search").all()
    assert found.search["lam"].between(0.5, 500.0).all()
    assert found.matched and abs(found.result.mask.n_kept / goal - 1) <= 0.2
    assert found.lam == pytest.approx(found.search["lam"].iloc[-1])
    by_lam = found.search.sort_values("lam")
    assert by_lam["n_kept"].iloc[0] >= by_lam["n_kept"].iloc[-1]


def _power_law_training(calls):
    """A stand-in for training whose mask keeps round(10⁶·λ^-0.7) of 10⁶ weights: the search
    logic alone, with sizes known exactly."""

    def train(lam):
        calls.append(lam)
        keep = torch.zeros(1_000_000, dtype=torch.bool)
        keep[: round(1e6 * lam**-0.7)] = True
        return TrainResult(Mask({"w": keep}), pd.DataFrame(), 0, 10, True, "stable")

    return train


def test_known_sizes_make_the_first_guess_an_interpolation():
    goal = round(1e6 * 20.0**-0.7)
    known = [(10.0, round(1e6 * 10.0**-0.7)), (100.0, round(1e6 * 100.0**-0.7)), (5e3, 2)]
    calls = []
    found = match_size(_power_law_training(calls), goal, (1.0, 1000.0), 0.01, 5, known=known)
    assert calls[0] == pytest.approx(20.0, rel=1e-3) and len(calls) == 1 and found.matched
    given = found.search[found.search["source"] == "given"]
    assert list(given["lam"]) == [10.0, 100.0, 5e3]  # 5e3 lies outside the bracket: recorded only
    blind = []
    match_size(_power_law_training(blind), goal, (1.0, 1000.0), 0.01, 5)
    assert blind[0] == pytest.approx(1000.0**0.5) and len(blind) > 1


def test_a_known_mask_within_tolerance_is_reused_without_training():
    goal = round(1e6 * 20.0**-0.7)
    known = [(10.0, round(1e6 * 10.0**-0.7)), (21.0, round(1e6 * 21.0**-0.7))]
    calls, reused = [], []
    given = _power_law_training([])

    def reuse(lam):
        reused.append(lam)
        return given(lam)

    found = match_size(_power_law_training(calls), goal, (1.0, 1000.0), 0.05, 5, known, reuse)
    assert calls == [] and reused == [21.0]  # λ 21 keeps 3.4% fewer: within 5%; λ 10 does not
    assert found.matched and found.lam == 21.0 and found.result.mask.n_kept == known[1][1]
    assert list(found.search["source"]) == ["given", "given", "reused"]
    tight = match_size(_power_law_training(calls), goal, (1.0, 1000.0), 0.01, 5, known, reuse)
    assert reused == [21.0] and len(calls) >= 1 and tight.lam != 21.0  # 3.4% is beyond 1%: trained


def test_size_matching_rejects_a_negative_goal_and_a_bad_bracket():
    with pytest.raises(ValueError, match="cannot match a subnetwork of -1 weights"):
        match_size(lambda lam: None, -1, (1.0, 10.0), 0.1, 3)
    with pytest.raises(ValueError, match="0 < low < high"):
        match_size(lambda lam: None, 5, (10.0, 1.0), 0.1, 3)


def test_training_reports_step_of_total_with_eta_and_calls_back(cyclic_tokens, target, caplog):
    """A long job's log says where it is and when it will end; a caller's own logger gets every
    step's history row."""
    import logging

    rows = []
    cfg = dataclasses.replace(CONFIG, max_steps=12, log_every=5, beta_growth=1.0)
    with caplog.at_level(logging.INFO, logger="bigram_subnetworks.training"):
        result = train_mask(
            make_tiny_model("gpt2"), target, cyclic_tokens, cfg, on_step=rows.append
        )
    lines = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert [line.split(" | ")[0] for line in lines] == [
        "attempt 0 step 1/12", "attempt 0 step 5/12", "attempt 0 step 10/12",
        "attempt 0 step 12/12",
    ]  # fmt: skip
    assert all("ms/step" in line for line in lines)
    assert all("ETA" in line for line in lines[:-1]) and "done in" in lines[-1]
    assert [row["step"] for row in rows] == list(range(1, 13))
    assert set(rows[0]) == set(HISTORY_COLUMNS)
    assert rows[-1]["xent"] == result.history["xent"].iloc[-1]


def test_progress_eta_is_the_mean_rate_times_what_is_left():
    from bigram_subnetworks.progress import Progress, duration

    progress = Progress(10, "x", bar=False, start=4)
    assert progress.eta() == 0.0
    progress.started -= 3.0  # three seconds for the next three units
    progress.advance(3)
    assert progress.eta() == pytest.approx(3.0, rel=0.05)  # 3 units left at 1 s each
    assert (duration(12), duration(252), duration(11160)) == ("12 s", "4.2 min", "3.1 h")


@pytest.mark.parametrize(
    ("setting", "error", "message"),
    [
        ({"lam": -1.0}, ValueError, "lam must be a number ≥ 0"),
        ({"lam": float("nan")}, ValueError, "lam must be a number ≥ 0"),
        ({"lam": "10"}, TypeError, "lam must be a number, got str '10'"),
        ({"max_steps": 2.5}, TypeError, "max_steps must be an integer, got float 2.5"),
        ({"attempts": True}, TypeError, "attempts must be an integer, got bool"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0"),
        ({"early_stop_fraction": 1.5}, ValueError, r"early_stop_fraction must be in \[0, 1\]"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be ≥ 0"),
    ],
)
def test_settings_are_checked_by_name(setting, error, message):
    with pytest.raises(error, match=message):
        dataclasses.replace(CONFIG, **setting)


def test_the_sentinel_lambdas_are_valid_settings():
    assert dataclasses.replace(CONFIG, lam=float("inf")).lam == float("inf")
    assert dataclasses.replace(CONFIG, lam=float("-inf")).lam == float("-inf")


def test_late_beta_growth_takes_over_once_few_weights_are_undecided(cyclic_tokens, target):
    """β grows by beta_growth while many weights are undecided and by beta_growth_late after:
    the switch follows each step's undecided share, as recorded in the history."""
    model = make_tiny_model("gpt2")
    cfg = dataclasses.replace(CONFIG, beta_growth=1.05, beta_growth_late=1.5, late_undecided=0.9)
    history = train_mask(model, target, cyclic_tokens, cfg).history
    growth = history["beta"].shift(-1) / history["beta"]
    late = history["undecided_fraction"] <= 0.9
    assert late.any() and (~late).any()
    assert np.allclose(growth[late].dropna(), 1.5) and np.allclose(growth[~late].dropna(), 1.05)
    always = dataclasses.replace(cfg, beta_growth=1.5, beta_growth_late=None)
    same = dataclasses.replace(cfg, late_undecided=1.0)
    one, two = (
        train_mask(make_tiny_model("gpt2"), target, cyclic_tokens, c) for c in (always, same)
    )
    assert one.mask.equals(two.mask) and one.history["xent"].equals(two.history["xent"])

"""Size-matched subnetworks (docs/method.md §7, beyond the paper): the λ at which a mask keeps as
many weights as another, searched by interpolating log λ between the sizes already known."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from .training import TrainResult

log = logging.getLogger(__name__)

SEARCH_COLUMNS = ("iteration", "source", "lam", "n_kept", "deviation", "stable", "steps")


@dataclass(frozen=True)
class SizeMatch:
    """The mask whose size is closest to the goal, the λ that produced it, and the search."""

    result: TrainResult
    lam: float
    matched: bool
    search: pd.DataFrame


def _next_lambda(low: tuple[float, int | None], high: tuple[float, int | None], goal: int) -> float:
    """The next λ to try between the ends (λ, kept or None if not trained).

    When both ends' sizes are known, interpolate log kept linearly in log λ (kept falls roughly
    as a power of λ), which usually lands within tolerance in one training; otherwise, or when
    the interpolation is degenerate, the geometric midpoint.
    """
    (lam_low, kept_low), (lam_high, kept_high) = low, high
    midpoint = math.sqrt(lam_low * lam_high)
    if not kept_low or not kept_high or goal <= 0 or kept_low <= kept_high:
        return midpoint
    fraction = math.log(kept_low / goal) / math.log(kept_low / kept_high)
    # Keep clear of the ends: a λ at an end would only retrain a known size.
    fraction = min(max(fraction, 0.1), 0.9)
    return math.exp(math.log(lam_low) + fraction * math.log(lam_high / lam_low))


def match_size(
    train: Callable[[float], TrainResult],
    goal_kept: int,
    bracket: tuple[float, float],
    tolerance: float,
    max_iterations: int,
    known: Sequence[tuple[float, int]] = (),
    reuse: Callable[[float], TrainResult] | None = None,
) -> SizeMatch:
    """Search λ inside ``bracket`` until ``train(λ)`` keeps ``goal_kept`` weights within a
    relative ``tolerance`` (beyond the paper, which compares subnetworks of whatever sizes its
    chosen λ give). The kept count falls as λ grows, so a mask that keeps too many moves the
    lower end up. ``known`` are (λ, kept) of masks already trained with the same target and
    settings (the configured optimal subnetworks): they narrow the bracket and give its ends
    sizes, so the first λ tried is interpolated rather than the bracket's midpoint. The
    deviation is |kept − goal| / max(goal, 1), so an empty goal is matched only by an empty
    mask. When a known mask is already within tolerance and ``reuse`` is given, ``reuse(λ)``
    returns that mask (source "reused" in the search) and nothing is trained: at 100M weights a
    training costs tens of CPU minutes. Returns the closest mask, matched or not."""
    if goal_kept < 0:
        raise ValueError(f"cannot match a subnetwork of {goal_kept} weights")
    if not 0 < bracket[0] < bracket[1]:
        raise ValueError(f"bracket {bracket} must satisfy 0 < low < high")
    low: tuple[float, int | None] = (bracket[0], None)
    high: tuple[float, int | None] = (bracket[1], None)
    rows, best = [], None

    def deviation_of(kept):
        return abs(kept - goal_kept) / max(goal_kept, 1)

    def record(iteration, source, lam, kept, stable, steps):
        nonlocal low, high
        deviation = deviation_of(kept)
        rows.append((iteration, source, lam, kept, deviation, stable, steps))
        if low[0] < lam < high[0]:
            if kept > goal_kept:
                low = (lam, kept)
            else:
                high = (lam, kept)
        return deviation

    for lam, kept in sorted(known):
        record(None, "given", lam, kept, None, None)
    closest = min(known, key=lambda pair: deviation_of(pair[1]), default=None)
    if reuse is not None and closest is not None and deviation_of(closest[1]) <= tolerance:
        result = reuse(closest[0])
        record(None, "reused", closest[0], result.mask.n_kept, result.stable, result.steps)
        log.info("size match: the known λ %.4g keeps %d (goal %d), reused", *closest, goal_kept)
        search = pd.DataFrame(rows, columns=list(SEARCH_COLUMNS))
        return SizeMatch(result, closest[0], True, search)
    for iteration in range(max_iterations):
        lam = _next_lambda(low, high, goal_kept)
        result = train(lam)
        kept = result.mask.n_kept
        deviation = record(iteration, "search", lam, kept, result.stable, result.steps)
        log.info("size match %d: λ %.4g keeps %d (goal %d)", iteration, lam, kept, goal_kept)
        if best is None or deviation < best[2]:
            best = (result, lam, deviation)
        if deviation <= tolerance:
            break
    result, lam, deviation = best
    search = pd.DataFrame(rows, columns=list(SEARCH_COLUMNS))
    return SizeMatch(result, lam, deviation <= tolerance, search)

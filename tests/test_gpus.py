"""One card per GPU job on a machine with several, simulated without a GPU: N declared cards,
M > N jobs at once (separate processes, as Snakemake runs them)."""

import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bigram_subnetworks import gpus

# A GPU job: hold a card, record when and which (and what CUDA would see), work, end.
JOB = """
import json, os, sys, time
from bigram_subnetworks.gpus import hold_gpu
card = hold_gpu(timeout=60)
start = time.monotonic()
time.sleep(float(sys.argv[2]))
record = {"card": card, "start": start, "end": time.monotonic(),
          "visible": os.environ["CUDA_VISIBLE_DEVICES"], "pid": os.getpid()}
with open(sys.argv[1], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


def _job(tmp_path: Path, cards: str | None, seconds: float, env: dict | None = None):
    environment = {**os.environ, gpus.LOCKS_ENV: str(tmp_path / "locks"), **(env or {})}
    environment.pop(gpus.CARDS_ENV, None)
    if cards is not None:
        environment[gpus.CARDS_ENV] = cards
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(tmp_path / "records.jsonl"), str(seconds)],
        env=environment,
    )


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]


def test_jobs_never_share_a_card_and_each_sees_only_its_own(tmp_path):
    jobs = [_job(tmp_path, "2", 0.4) for _ in range(5)]
    assert [job.wait(timeout=60) for job in jobs] == [0] * 5
    records = _records(tmp_path)
    assert len(records) == 5 and {r["card"] for r in records} == {"0", "1"}
    assert all(r["visible"] == r["card"] for r in records)
    for card in ("0", "1"):
        spans = sorted((r["start"], r["end"]) for r in records if r["card"] == card)
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
    # Two cards, five jobs of 0.4 s: at least three rounds, so some job waited for a card.
    assert max(r["end"] for r in records) - min(r["start"] for r in records) >= 0.4 * 2.5


def _wait_until_it_holds_card_0(tmp_path: Path, holder: subprocess.Popen) -> None:
    lock = tmp_path / "locks/card-0.lock"
    deadline = time.monotonic() + 20
    while not (lock.exists() and lock.read_text().strip() == str(holder.pid)):
        assert time.monotonic() < deadline, "the first job never took the card"
        time.sleep(0.05)


def test_a_killed_job_frees_its_card(tmp_path):
    holder = _job(tmp_path, "1", 30)
    _wait_until_it_holds_card_0(tmp_path, holder)
    waiter = _job(tmp_path, "1", 0.1)
    time.sleep(1.0)
    assert waiter.poll() is None  # waiting: the only card is held
    holder.send_signal(signal.SIGKILL)  # no cleanup code runs
    assert waiter.wait(timeout=30) == 0
    (record,) = _records(tmp_path)
    assert record["card"] == "0" and record["pid"] == waiter.pid


def test_the_cards_of_a_schedulers_allocation_are_the_visible_ones(tmp_path):
    jobs = [_job(tmp_path, None, 0.2, {"CUDA_VISIBLE_DEVICES": "3,5"}) for _ in range(2)]
    assert [job.wait(timeout=60) for job in jobs] == [0, 0]
    assert sorted(r["visible"] for r in _records(tmp_path)) == ["3", "5"]


def test_no_card_means_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv(gpus.LOCKS_ENV, str(tmp_path))
    monkeypatch.setenv(gpus.CARDS_ENV, "0")
    assert gpus.cards() == [] and gpus.hold_gpu() is None


def test_a_wait_that_outlasts_its_timeout_says_so(monkeypatch, tmp_path):
    holder = _job(tmp_path, "1", 30)
    _wait_until_it_holds_card_0(tmp_path, holder)
    monkeypatch.setenv(gpus.LOCKS_ENV, str(tmp_path / "locks"))
    monkeypatch.setenv(gpus.CARDS_ENV, "1")
    try:
        with pytest.raises(TimeoutError, match="every GPU"):
            gpus.hold_gpu(timeout=0.5)
    finally:
        holder.kill()
        holder.wait()
        gpus.release_gpu()


def test_slurm_allocations_lock_apart(monkeypatch, tmp_path):
    """SLURM may number each allocation's cards from 0: two allocations on one node must not
    wait on each other's card 0."""
    monkeypatch.delenv(gpus.LOCKS_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # leave nothing in the real /tmp
    monkeypatch.setenv("SLURM_JOB_ID", "101")
    first = gpus.lock_directory()
    monkeypatch.setenv("SLURM_JOB_ID", "102")
    assert gpus.lock_directory() != first and first.name.endswith("-slurm-101")

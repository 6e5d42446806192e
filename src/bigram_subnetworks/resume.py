"""Resumable training: atomic snapshots of a training loop's whole state.

A cluster job can be preempted or killed at any moment. `pretrain` and `train_mask` save their
state (weights or scores, optimizer, β, RNG states, data position, attempt, history) every
``every`` steps through a `Resume`; rerunning the same job continues from the last snapshot and
ends bit-identical to an uninterrupted run on the CPU, because the data order is a function of
(seed, step) and nothing else draws randomness outside the saved generators.

Snapshots are written to a temporary name and renamed (a kill mid-write leaves the previous one),
loaded with ``torch.load(weights_only=True)`` (no code from data), carry a fingerprint of the
settings that made them (a snapshot from other settings is ignored, with a warning), and are
removed when the job succeeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def fingerprint(settings: Any) -> str:
    """A stable hash of JSON-able settings: what a snapshot must have been made with."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rng_states() -> dict[str, Any]:
    """The torch generators a training step may draw from (dropout): CPU, and CUDA if present."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Resume:
    """Snapshots of one job's training state in ``directory``, every ``every`` steps (0: never).

    ``settings`` identify the run (its config); a snapshot made with other settings is not
    resumed from.
    """

    def __init__(self, directory: str | os.PathLike, every: int, settings: Any) -> None:
        if every < 0:
            raise ValueError(f"resume interval must be ≥ 0 steps, got {every}")
        self.directory = Path(directory)
        self.every = every
        self.fingerprint = fingerprint(settings)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, "state": state}, tmp)

    def load(self) -> dict[str, Any] | None:
        """The last snapshot's state, or None when there is none (or it is from other
        settings). A snapshot that cannot be read is an error naming the file: deleting it
        restarts the job from scratch."""
        if not self.path.exists():
            if self.every:
                log.info("snapshots every %d steps in %s", self.every, self.directory)
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{self.path}: cannot read the resume snapshot ({error}); delete it to restart "
                "the job from scratch"
            ) from error
        if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
            log.warning("%s was made with other settings: starting from scratch", self.path)
            return None
        log.info("resuming from %s", self.path)
        return saved["state"]

    def clear(self) -> None:
        """Remove the snapshots (the job succeeded)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)

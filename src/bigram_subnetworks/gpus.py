"""One GPU per job on a machine with several (docs/scale.md, "Several GPUs on one machine").

`snakemake --resources gpu=N` lets N GPU jobs run at once, but each would pick CUDA's default
device, so all of them would land on the first card. A GPU job therefore holds one card for
its whole life: it takes an exclusive `fcntl.flock` on a lock file named after a free card and
makes that card the only one it sees (`CUDA_VISIBLE_DEVICES`) before CUDA starts. The kernel
drops the lock when the process ends however it ends (success, exception, SIGKILL, a node's
out-of-memory killer), so a card is never left taken by a dead job and nothing has to clean up.

The cards are those the job may see: the ids in `CUDA_VISIBLE_DEVICES` when it is set (a
scheduler's allocation), else the machine's (`/proc/driver/nvidia/gpus`, read without starting
CUDA). `BIGRAM_SUBNETWORKS_GPUS=N` declares N cards instead (tests simulate cards with it). Lock
files live in `BIGRAM_SUBNETWORKS_GPU_LOCKS` (default: a per-user directory in the system's
temporary directory, one per SLURM allocation), shared by every job on the machine, so jobs of
several Snakemake runs on one machine share the cards too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

CARDS_ENV = "BIGRAM_SUBNETWORKS_GPUS"
LOCKS_ENV = "BIGRAM_SUBNETWORKS_GPU_LOCKS"
# Between tries while every card is held: with `--resources gpu=N` a card frees within one job's
# end; a job started outside Snakemake's count waits here until one does.
POLL_SECONDS = 0.5

_held: dict[str, int] = {}  # card id → the open lock file's descriptor, for the process's life


def cards() -> list[str]:
    """The ids of the cards this process may use, in order (see the module docstring)."""
    if os.environ.get(CARDS_ENV):
        return [str(i) for i in range(int(os.environ[CARDS_ENV]))]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [card.strip() for card in visible.split(",") if card.strip()]
    driver = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def lock_directory() -> Path:
    """Where the lock files are: shared by the jobs of one machine, or of one SLURM allocation
    (SLURM may number each allocation's cards from 0, so jobs of two allocations on one node
    must not lock the same names)."""
    name = f"bigram-subnetworks-gpus-{os.getuid()}"
    if os.environ.get("SLURM_JOB_ID"):
        name += f"-slurm-{os.environ['SLURM_JOB_ID']}"
    directory = Path(os.environ.get(LOCKS_ENV) or Path(tempfile.gettempdir()) / name)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _try_lock(path: Path) -> int | None:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
    return descriptor


def hold_gpu(timeout: float | None = None) -> str | None:
    """Take a free card for the rest of this process and make it the only one CUDA sees;
    returns its id (None on a machine without cards: the job runs on the CPU). Waits while
    every card is held, up to ``timeout`` seconds (None: for as long as it takes). Call it
    before anything starts CUDA. A second call returns the card already held."""
    if _held:
        return next(iter(_held))
    ids = cards()
    if not ids:
        return None
    directory, start = lock_directory(), time.monotonic()
    while True:
        for card in ids:
            descriptor = _try_lock(directory / f"card-{card}.lock")
            if descriptor is not None:
                _held[card] = descriptor
                os.environ["CUDA_VISIBLE_DEVICES"] = card
                log.info("holding GPU %s (of %s) for this job", card, ",".join(ids))
                return card
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"every GPU ({', '.join(ids)}) stayed held for {timeout:g} s")
        time.sleep(POLL_SECONDS)


def release_gpu() -> None:
    """Give the held card back before the process ends (ending the process does it too)."""
    for descriptor in _held.values():
        os.close(descriptor)
    _held.clear()

"""Progress people can read: a log line with position, rate and time left, and a bar when a person
is watching (a terminal or a notebook), never in a job's log file.

Training, evaluation, ablation and the residual-stream passes report through `Progress`; long
jobs on a cluster show their state in the log (`step 300/15000 | … | ETA 41 min`), an interactive
session shows a tqdm bar, and a caller's own logger can subscribe with ``callback``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def interactive() -> bool:
    """Whether a person is likely watching: stderr is a terminal, or an IPython kernel runs."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def duration(seconds: float) -> str:
    """12 s, 4.2 min, 3.1 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Counts ``total`` units of work called ``unit`` and logs a line to ``logger``:
    `what unit n/total | fields… | ms/unit | ETA …`, ms/unit over the units since the previous
    line (the current speed: a shared machine's load shows in it). Lines come at the first
    unit, then every ``every`` units when given (training: `log_every` steps, so logs are
    comparable run to run), else at most every ``every_s`` seconds, and at the last unit.
    ``bar`` (default: `interactive()`) also shows a tqdm bar. ``start`` units were done before
    (a resumed run).

    The ETA is the mean time per unit so far times the units left: an upper bound where work may
    end early (mask training stops once the mask is decided).
    """

    def __init__(
        self,
        total: int,
        what: str,
        logger: logging.Logger = log,
        unit: str = "batch",
        every: int | None = None,
        every_s: float = 15.0,
        bar: bool | None = None,
        start: int = 0,
    ) -> None:
        self.total, self.what, self.logger, self.unit = total, what, logger, unit
        self.every, self.every_s = every, every_s
        self.done = self.start = self.logged = start
        self.started = self.last_log = time.perf_counter()
        self._bar = None
        if bar if bar is not None else interactive():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=start, desc=what, unit=unit, leave=False)

    def eta(self) -> float:
        """Seconds left at the mean rate of this run so far (0 before its first unit)."""
        ran = self.done - self.start
        if not ran:
            return 0.0
        return (time.perf_counter() - self.started) / ran * (self.total - self.done)

    def _due(self, now: float) -> bool:
        if self.done in (self.start + 1, self.total):
            return True
        if self.every is not None:
            return self.done % self.every == 0
        return now - self.last_log >= self.every_s

    def advance(self, n: int = 1, **fields: Any) -> None:
        """``n`` more units done; ``fields`` (name → value) join the log line and the bar."""
        self.done += n
        now = time.perf_counter()
        if self._bar is not None:
            self._bar.update(n)
            if fields:
                self._bar.set_postfix({k: _format(v) for k, v in fields.items()}, refresh=False)
        if self._due(now):
            recent = 1000 * (now - self.last_log) / (self.done - self.logged)
            self.last_log, self.logged = now, self.done
            elapsed = now - self.started
            parts = [f"{self.what} {self.unit} {self.done}/{self.total}"]
            parts += [f"{name} {_format(value)}" for name, value in fields.items()]
            parts.append(f"{recent:.0f} ms/{self.unit}")
            parts.append(f"ETA {duration(self.eta())}" if self.done < self.total else
                         f"done in {duration(elapsed)}")  # fmt: skip
            self.logger.info(" | ".join(parts))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


StepCallback = Callable[[dict[str, Any]], None]

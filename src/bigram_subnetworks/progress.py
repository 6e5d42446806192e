"""Progress people can read: a log line with position, rate and time left, and a bar when a person
is watching (a terminal or a notebook), never in a job's log file.

Training, evaluation, ablation and the residual-stream passes report through `Progress`; long
jobs on a cluster show their state in the log (`step 300/15000 | … | ETA 41 min`), an interactive
session shows a tqdm bar, and a caller's own logger can subscribe with ``callback``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)
# Whether `Progress` shows a bar when it is not told: None follows `interactive()`; the
# library's front doors set it from their `progress=` switch (`reporting`).
_BARS: contextvars.ContextVar[bool | None] = contextvars.ContextVar("bars", default=None)
PACKAGE_LOGGER = "bigram_subnetworks"


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
        if bar is None:
            bar = _BARS.get()
        if bar if bar is not None else interactive():
            from tqdm.auto import tqdm

            # The bar stays when done: a notebook keeps the record of the run.
            self._bar = tqdm(total=total, initial=start, desc=what, unit=unit, leave=True)

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


def _unconfigured(logger: logging.Logger) -> bool:
    """Whether no handler would print this logger's INFO lines (only logging's last resort,
    which shows warnings only)."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            return False
        current = current.parent if current.propagate else None
    return True


@contextlib.contextmanager
def reporting(progress: bool | None) -> Iterator[None]:
    """Progress of one library call, as users of transformers and huggingface_hub expect:
    ``None`` (default) shows a tqdm bar where a person watches (a terminal, a notebook) and, when
    the caller has not configured `logging`, prints the package's INFO lines (progress every
    `log_every` steps, what it is doing before the first step) to stderr for the call, so a
    script or batch job keeps a record; ``True`` always shows the bar and the lines; ``False``
    shows neither (the caller's own logging configuration still applies)."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = None
    if progress is not False and _unconfigured(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    level = logger.level
    if handler is not None and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    token = _BARS.set(progress if progress is not None else None)
    try:
        yield
    finally:
        _BARS.reset(token)
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


StepCallback = Callable[[dict[str, Any]], None]

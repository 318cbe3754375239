"""The Reporter protocol: how a stage reports progress and metrics without knowing who listens.

Stages call ``start``/``advance`` for progress and ``metric`` for per-step numbers. The doors
supply an implementation: a Rich progress bar on the CLI, the Prefect run logger in flows,
MLflow metrics in tracked runs (``tspipe.tracking``). ``MultiReporter`` fans out to several.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Reporter(Protocol):
    def start(self, task: str, total: int | None = None) -> None:
        """A unit of progress named ``task`` begins; ``total`` steps if known."""

    def advance(self, task: str, n: int = 1) -> None:
        """``n`` more steps of ``task`` are done."""

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        """A number worth plotting (loss, throughput, counts)."""

    def message(self, text: str, level: int = logging.INFO) -> None:
        """A line for people: a warning about an item, a summary."""


class LoggingReporter:
    """Reports through ``logging``: progress every ``every`` steps, metrics at DEBUG."""

    def __init__(self, logger: logging.Logger | None = None, every: int = 10) -> None:
        self.log = logger or logging.getLogger("tspipe")
        self.every = every
        self._done: dict[str, int] = {}
        self._total: dict[str, int | None] = {}

    def start(self, task: str, total: int | None = None) -> None:
        self._done[task] = 0
        self._total[task] = total
        self.log.info("%s: started (%s steps)", task, total if total is not None else "?")

    def advance(self, task: str, n: int = 1) -> None:
        done = self._done.get(task, 0) + n
        self._done[task] = done
        total = self._total.get(task)
        if done % self.every == 0 or (total is not None and done >= total):
            self.log.info("%s: %d/%s", task, done, total if total is not None else "?")

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log.debug("metric %s=%g (step %s)", key, value, step)

    def message(self, text: str, level: int = logging.INFO) -> None:
        self.log.log(level, text)


class NullReporter:
    """Reports nothing (library use, tests)."""

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, n: int = 1) -> None:
        pass

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        pass

    def message(self, text: str, level: int = logging.INFO) -> None:
        pass


class RichReporter:
    """Progress bars for people at a terminal; messages go through ``logging``."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self._ids: dict[str, int] = {}
        self.log = logging.getLogger("tspipe")

    def __enter__(self) -> RichReporter:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, task: str, total: int | None = None) -> None:
        self._ids[task] = self._progress.add_task(task, total=total)

    def advance(self, task: str, n: int = 1) -> None:
        if task in self._ids:
            self._progress.advance(self._ids[task], n)

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        pass

    def message(self, text: str, level: int = logging.INFO) -> None:
        self.log.log(level, text)


class MultiReporter:
    """Sends every call to each of several reporters."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def start(self, task: str, total: int | None = None) -> None:
        for r in self.reporters:
            r.start(task, total)

    def advance(self, task: str, n: int = 1) -> None:
        for r in self.reporters:
            r.advance(task, n)

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        for r in self.reporters:
            r.metric(key, value, step)

    def message(self, text: str, level: int = logging.INFO) -> None:
        for r in self.reporters:
            r.message(text, level)


def track(reporter: Reporter, task: str, items: Iterable[T], total: int | None = None
          ) -> Iterator[T]:
    """Iterate ``items`` while reporting one step of ``task`` per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    reporter.start(task, total)
    for item in items:
        yield item
        reporter.advance(task)

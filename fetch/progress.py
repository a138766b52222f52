"""progress: a download bar on stderr, or nothing at all.

rich is imported only when a bar is wanted: it costs tens of milliseconds of
start-up that commands without a TTY should not pay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Bar(Protocol):
    def start(self, label: str, total: int | None) -> None: ...
    def update(self, completed: int, total: int | None) -> None: ...


class _NoBar:
    def start(self, label: str, total: int | None) -> None:
        pass

    def update(self, completed: int, total: int | None) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Bar]:
    if not enabled:
        yield _NoBar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    class _RichBar:
        def __init__(self, progress: Progress) -> None:
            self._progress = progress
            self._task: TaskID | None = None

        def start(self, label: str, total: int | None) -> None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(label, total=total)

        def update(self, completed: int, total: int | None) -> None:
            if self._task is not None:
                self._progress.update(self._task, completed=completed, total=total)

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield _RichBar(progress)

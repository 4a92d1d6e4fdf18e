"""What rpgen shows while and after it works: one progress-bar style (rich) for every long step,
and matplotlib on the Agg backend for every PNG (no display needed).

Both sit below every subpackage: training, generation, alignment, evaluation and the zoos use them.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


PLAIN_EVERY_S = 30.0
"""Without a terminal (a pipe, ``tee``, a CI log), a progress line at most this often per task."""
ETA_AFTER_S = 10.0
"""A plain line estimates the time left only once the task has run this long."""


@contextmanager
def progress_bar(*, enabled: bool = True, show_loss: bool = True) -> Iterator[Progress | PlainProgress]:
    """A rich progress bar; tasks may carry a ``loss`` field shown beside the bar. When the output
    is not a terminal, timed plain lines instead (:class:`PlainProgress`): a bar that redraws
    prints nothing to a pipe until it ends."""
    console = Console()
    if enabled and not console.is_terminal:
        yield PlainProgress(console, show_loss=show_loss)
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if show_loss:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not enabled, transient=False) as bar:
        yield bar


@dataclass
class _PlainTask:
    description: str
    total: float | None
    completed: float
    fields: dict
    start: float = field(default_factory=time.monotonic)
    printed: float = 0.0


class PlainProgress:
    """The part of :class:`rich.progress.Progress` rpgen uses, printing one line per task every
    :data:`PLAIN_EVERY_S` seconds and when the task completes: ``training 400/2000 loss 0.6810,
    1m02s elapsed, eta 4m10s``."""

    disable = False

    def __init__(self, console: Console, *, show_loss: bool, every_s: float = PLAIN_EVERY_S) -> None:
        self.console, self._show_loss, self._every_s = console, show_loss, every_s
        self._tasks: list[_PlainTask] = []

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        self._tasks.append(_PlainTask(description, total, completed, fields))
        return len(self._tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, **fields) -> None:
        task = self._tasks[task_id]
        task.total = task.total if total is None else total
        task.completed = task.completed if completed is None else completed
        task.completed += advance or 0
        task.description = task.description if description is None else description
        task.fields.update(fields)
        now = time.monotonic()
        done = task.total is not None and task.completed >= task.total
        if (advance or completed is not None) and (done or now - task.printed >= self._every_s):
            task.printed = now
            self.console.print(self._line(task, now), highlight=False, soft_wrap=True)

    def _line(self, task: _PlainTask, now: float) -> str:
        elapsed = now - task.start
        line = f"{task.description} {task.completed:g}" + ("" if task.total is None else f"/{task.total:g}")
        loss = task.fields.get("loss")
        if self._show_loss and isinstance(loss, float) and math.isfinite(loss):
            line += f" loss {loss:.4f}"
        line += f", {_duration(elapsed)} elapsed"
        if task.total and 0 < task.completed < task.total and elapsed >= ETA_AFTER_S:  # first steps warm up
            line += f", eta {_duration(elapsed / task.completed * (task.total - task.completed))}"
        return line


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

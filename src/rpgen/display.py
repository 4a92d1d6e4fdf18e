"""What rpgen shows while and after it works: one progress-bar style (rich) for every long step,
and matplotlib on the Agg backend for every PNG (no display needed).

Both sit below every subpackage: training, generation, alignment, evaluation and the zoos use them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(*, enabled: bool = True, show_loss: bool = True) -> Iterator[Progress]:
    """A rich progress bar; tasks may carry a ``loss`` field shown beside the bar."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if show_loss:
        columns.append(TextColumn("loss {task.fields[loss]:.4f}"))
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, disable=not enabled, transient=False) as bar:
        yield bar


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

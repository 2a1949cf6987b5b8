"""Following a job until it ends, with an optional live progress bar (rich)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.jobs import JobView, RequestState

__all__ = ["follow"]


def follow(read: Callable[[], JobView], *, progress: bool, timeout: float | None,
           poll_s: float) -> JobView:
    """Poll ``read`` until the job is done or ``timeout`` passes; the last view."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = read()
    if not progress:
        while not view.done and (deadline is None or time.monotonic() < deadline):
            time.sleep(poll_s)
            view = read()
        return view
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(view.id, total=view.total, detail="")
        while True:
            failed = view.counts.get(RequestState.FAILED, 0)
            tokens = view.prompt_tokens + view.completion_tokens
            bar.update(task, completed=view.finished,
                       detail=f"failed {failed}  tokens {tokens}  ${view.cost:.6f}")
            if view.done or (deadline is not None and time.monotonic() >= deadline):
                return view
            time.sleep(poll_s)
            view = read()

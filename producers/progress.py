"""Following a job until it ends, with an optional live progress bar (rich).

A database outage while following is ridden out, not fatal: a poll the database does not
answer (``DatabaseUnavailableError``) is told to the user once, and polling goes on with
backoff (doubling up to ``MAX_BACKOFF_S``). Following gives up, raising that error, only when
the outage lasts past the timeout or past ``outage_s`` without one answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas.errors import DatabaseUnavailableError
from schemas.jobs import JobView, RequestState

__all__ = ["MAX_BACKOFF_S", "Poller", "follow"]

MAX_BACKOFF_S = 5.0
"""The longest pause between two polls while the database does not answer."""


class Poller:
    """Reads the job, pacing the polls and riding out a database outage: an outage is told
    through ``notify`` once and ridden out for up to ``outage_s`` (and the timeout). Between
    polls ``pause(seconds)`` waits (``EndingWatch.pause`` returns early when the job's ending
    is announced)."""

    def __init__(self, read: Callable[[], JobView], *, timeout: float | None, poll_s: float,
                 outage_s: float, notify: Callable[[str], None],
                 pause: Callable[[float], None] = time.sleep) -> None:
        self._read, self._poll_s, self._outage_s, self._notify = read, poll_s, outage_s, notify
        self._pause = pause
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._delay = poll_s
        self._down_since: float | None = None

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def expired(self) -> bool:
        """The timeout passed with the database answering (during an outage the next poll
        raises instead: a stale view is not an answer)."""
        return self._down_since is None and self._past_deadline()

    def poll(self) -> JobView | None:
        """The job's view; None while the database does not answer (raises once the outage
        outlasts the deadline or ``outage_s``)."""
        try:
            view = self._read()
        except DatabaseUnavailableError as exc:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                self._notify(f"{exc}; still waiting, retrying with backoff")
            down = now - self._down_since
            if down >= self._outage_s or self._past_deadline():
                raise DatabaseUnavailableError(
                    f"{exc}; gave up waiting after {down:.0f}s without an answer (the job "
                    "itself is not affected: wait again once the database is back)") from exc
            self._delay = min(self._delay * 2, MAX_BACKOFF_S)
            return None
        if self._down_since is not None:
            self._notify("the database answers again")
            self._down_since, self._delay = None, self._poll_s
        return view

    def sleep(self) -> None:
        pause = self._delay
        if self._deadline is not None:
            pause = max(0.0, min(pause, self._deadline - time.monotonic()))
        self._pause(pause)


def follow(poller: Poller, *, progress: bool) -> JobView:
    """Poll until the job is done or the poller's timeout passes; the last view."""
    view = poller.poll()
    while view is None:  # the database did not answer the first poll
        poller.sleep()
        view = poller.poll()
    if not progress:
        while not view.done and not poller.expired():
            poller.sleep()
            view = poller.poll() or view
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
            if view.done or poller.expired():
                return view
            poller.sleep()
            view = poller.poll() or view

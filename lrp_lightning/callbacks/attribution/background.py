"""Log writing off the training thread: figure rendering, image encoding and the writes themselves.

:class:`BackgroundWriter` runs jobs in submission order on one worker thread, so the training
thread only hands over finished tensors. At most one epoch's jobs are pending: :meth:`submit`
first waits for the previous ones, and the callback waits for all of them before the loggers are
finalized (teardown, exception). A failing job becomes a warning; training goes on.
"""
from __future__ import annotations

import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

THREAD_NAME = "lrp-lightning-log"


class BackgroundWriter:
    """Runs logging jobs in order on one worker thread (or at once, when ``enabled`` is false).

    Parameters
    ----------
    enabled : bool
        Run jobs on the worker thread; false runs each job inside :meth:`submit`.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._executor: Optional[ThreadPoolExecutor] = None
        self._pending: list[Future] = []

    def submit(self, job: Callable[[], None], background: bool = True) -> None:
        """Run ``job`` after the jobs submitted before it, waiting first for those still pending.

        Parameters
        ----------
        job : callable
            Takes no argument; its failure is reported as a ``RuntimeWarning``.
        background : bool
            False runs this job inside :meth:`submit` (e.g. for a logger that must be called from the
            training thread).
        """
        self.wait()
        if not (self.enabled and background):
            _report_failure(job)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        self._pending.append(self._executor.submit(_report_failure, job))

    def wait(self) -> None:
        """Block until every submitted job has finished."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Wait for the pending jobs and stop the worker thread (a later :meth:`submit` starts a new one)."""
        self.wait()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. into spawned processes) without the thread: pending jobs are finished first."""
        self.close()
        return {"enabled": self.enabled, "_executor": None, "_pending": []}


def _report_failure(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception as error:  # a logger failure must not stop training
        warnings.warn(f"AttributionCallback could not write its logs: {type(error).__name__}: {error}", RuntimeWarning)

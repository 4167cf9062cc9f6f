"""Which Ray job's logs an actor's output shows in, and keeping per-call lines whole.

Ray forwards a worker's stdout/stderr to the driver of the job it was created in, and
each driver prints only its own job's lines (so ``ray job logs`` shows them). An app's
actors are created in the job of the driver that started it, or by the router; after a
rolling upgrade another driver (another job) owns the app, so the actors say that their
output from then on belongs to its job, with the marker line Ray's log monitor reads
(``:job_id:<hex>``, as Ray itself writes when a worker starts working for a job).

Ray also folds lines that differ only in words with digits, coming from several workers,
into one ``[repeated Nx across cluster]`` line: per-call lines (which differ only by their
call id) would vanish. A driver of ours turns that off unless ``RAY_DEDUP_LOGS`` is set.
"""

from __future__ import annotations

import os
import sys

__all__ = ["keep_per_call_lines", "show_in_job"]

#: Ray's log monitor attributes the lines after this marker to the job it names.
_JOB_MARKER = ":job_id:"

_shown_in = ""


def show_in_job(job_id: str) -> None:
    """From now on this process's stdout and stderr show in the logs of job ``job_id``
    (its driver's output, ``ray job logs``). Idempotent."""
    global _shown_in
    if not job_id or job_id == _shown_in:
        return
    try:
        from ray._private import ray_constants

        marker = str(getattr(ray_constants, "LOG_PREFIX_JOB_ID", _JOB_MARKER))
    except ImportError:  # a private module: the marker's value is the documented fallback
        marker = _JOB_MARKER
    for stream in (sys.stdout, sys.stderr):
        print(f"{marker}{job_id}", file=stream, flush=True)
    _shown_in = job_id


def keep_per_call_lines() -> None:
    """Turn off Ray's folding of similar lines from several workers in this driver (see
    the module docstring), unless ``RAY_DEDUP_LOGS`` says otherwise."""
    if "RAY_DEDUP_LOGS" in os.environ:
        return
    os.environ["RAY_DEDUP_LOGS"] = "0"
    # Read when Ray is imported, which it may be by now.
    ray_logging = sys.modules.get("ray._private.ray_logging")
    if ray_logging is not None and hasattr(ray_logging, "RAY_DEDUP_LOGS"):
        setattr(ray_logging, "RAY_DEDUP_LOGS", False)  # noqa: B010 (a module's constant)

"""CPU priority: the processes that carry calls outrank Ray's monitoring daemons.

Ray starts its worker processes (our actors) at nice 15, below its own daemons,
which suits batch work. Every 5 s Ray's dashboard agent gathers the node's
statistics (psutil over every worker, disks, network): 15 to 25 ms of CPU at
once. On a busy core that burst ran ahead of the actors' loops, and every call
whose frames arrived meanwhile waited for it: measured with
``benchmarks/bench_clients.py`` (steady 200 calls/s, the whole tree on one core),
the slowest 1% of calls were the ones offered during those bursts, 20 to 60 ms
late. The log monitor, the dashboard and the autoscaler's monitor poll in the
same way, only more lightly.

- On a local Ray we start, the workers start at nice 0 (``worker_niceness`` in
  the driver's ``LOCAL_RAY_CONFIG``) and :func:`lower_daemons` puts the daemons at
  :data:`NICENESS` as soon as ``ray.init`` returns: they still get the CPU the calls
  leave idle, and a share of it when a core is saturated. The raylet and the GCS keep their priority.
- On a cluster started elsewhere, the operator starts Ray with
  ``RAY_worker_niceness=0`` (``cluster/README.md``). Where that was not done, the
  connection actors and CallActors raise themselves to nice 0 if the system lets
  them (:func:`claim_normal_priority`), and otherwise say so once in their log.
"""

from __future__ import annotations

import contextlib
import logging
import os

import psutil

__all__ = [
    "DAEMONS",
    "NICENESS",
    "TITLES",
    "claim_normal_priority",
    "is_daemon",
    "lower_daemons",
]

log = logging.getLogger("relay_actors.ray_runtime")

#: ``nice`` of the daemons: a CPU share of ~10% against a default-priority process
#: on a saturated core (CFS weights 110 against 1024).
NICENESS = 10
#: The scripts of the Python daemons Ray starts on a node (the raylet's own command
#: line names some of them too, inside an argument: it is not one of them).
DAEMONS = (
    "ray/dashboard/agent.py",
    "ray/dashboard/dashboard.py",
    "ray/_private/log_monitor.py",
    "ray/autoscaler/_private/monitor.py",
)
#: Their process titles, for those that set one.
TITLES = ("ray::DashboardAgent",)


def is_daemon(argv: list[str]) -> bool:
    """Whether a command line (its arguments) is one of the daemons."""
    if not argv:
        return False
    if argv[0].startswith(TITLES):
        return True
    return os.path.basename(argv[0]).startswith("python") and any(a.endswith(DAEMONS) for a in argv[1:3])


def _threads(proc: psutil.Process) -> list[int]:
    """``proc``'s thread ids: Linux keeps a niceness per thread (threads started later
    inherit it from the thread that starts them), so each one is set."""
    return [thread.id for thread in proc.threads()]


def lower_daemons(root: int | None = None) -> list[int]:
    """Give Ray's monitoring daemons under ``root`` (default: this process, which
    started the local Ray) the niceness :data:`NICENESS`; returns the pids changed.

    Idempotent, and harmless where it cannot act (no permission): the daemons then keep
    their priority."""
    changed = []
    try:
        procs = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []
    for proc in procs:
        try:
            if not is_daemon(proc.cmdline()):
                continue
            lowered = False
            for tid in _threads(proc):
                with contextlib.suppress(OSError):  # (a thread that ended meanwhile)
                    if os.getpriority(os.PRIO_PROCESS, tid) < NICENESS:
                        os.setpriority(os.PRIO_PROCESS, tid, NICENESS)
                        lowered = True
            if lowered:
                changed.append(proc.pid)
        except psutil.Error:
            continue  # ended meanwhile, or not ours to read
    if changed:
        log.debug("Ray's monitoring daemons %s now run at nice %d", changed, NICENESS)
    return changed


def claim_normal_priority(what: str) -> bool:
    """Bring every thread of this process up to nice 0 if it runs lower (Ray's workers
    start at 15); returns whether it now runs at 0. Raising a priority takes a
    privilege (``CAP_SYS_NICE`` or ``RLIMIT_NICE``): without one, ``what`` logs one
    warning that says what to do."""
    refused = False
    for tid in _threads(psutil.Process()):
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        except PermissionError:
            refused = True
        except OSError:
            continue  # a thread that ended meanwhile
    if refused:
        log.warning(
            "%s runs at nice %d, below Ray's daemons, and may not raise itself: calls can wait "
            "behind them on a busy node. Start Ray with RAY_worker_niceness=0 (cluster/README.md)",
            what,
            os.getpriority(os.PRIO_PROCESS, 0),
        )
    return not refused

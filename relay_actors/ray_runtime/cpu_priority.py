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
  :data:`NICENESS`: they still get the CPU the calls leave idle, and a share of it
  when a core is saturated. The raylet and the GCS keep their priority.
- On a cluster started elsewhere, the operator starts Ray with
  ``RAY_worker_niceness=0`` (``cluster/README.md``). Where that was not done, the
  connection actors and CallActors raise themselves to nice 0 if the system lets
  them (:func:`claim_normal_priority`), and otherwise say so once in their log.
"""

from __future__ import annotations

import contextlib
import logging
import os

__all__ = [
    "DAEMONS",
    "NICENESS",
    "TITLES",
    "claim_normal_priority",
    "descendants",
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
    """Whether a command line (``/proc/<pid>/cmdline``, split) is one of the daemons."""
    if not argv:
        return False
    if argv[0].startswith(TITLES):
        return True
    return os.path.basename(argv[0]).startswith("python") and any(a.endswith(DAEMONS) for a in argv[1:3])


def _parents() -> dict[int, int]:
    """Every process's parent, from ``/proc``."""
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                # Fields after the command name (which may hold spaces and parentheses).
                out[int(name)] = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
    return out


def descendants(root: int) -> set[int]:
    """The pids of ``root``'s descendants, now."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def lower_daemons(root: int | None = None) -> list[int]:
    """Give Ray's monitoring daemons under ``root`` (default: this process, which
    started the local Ray) the niceness :data:`NICENESS`; returns the pids changed.

    Idempotent, and harmless where it cannot act (not Linux, no permission): the
    daemons then keep their priority."""
    if not os.path.isdir("/proc"):
        return []
    changed = []
    try:
        pids = descendants(os.getpid() if root is None else root)
    except OSError:
        return []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().decode("utf-8", "replace").split("\0")
            if not is_daemon(argv):
                continue
            # Linux keeps a niceness per thread: each of them (threads started later
            # inherit it from the thread that starts them).
            lowered = False
            for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                with contextlib.suppress(OSError):  # (a thread that ended meanwhile)
                    if os.getpriority(os.PRIO_PROCESS, tid) < NICENESS:
                        os.setpriority(os.PRIO_PROCESS, tid, NICENESS)
                        lowered = True
            if lowered:
                changed.append(pid)
        except OSError:
            continue  # ended meanwhile, or not ours to change
    if changed:
        log.debug("Ray's monitoring daemons %s now run at nice %d", changed, NICENESS)
    return changed


def claim_normal_priority(what: str) -> bool:
    """Bring every thread of this process up to nice 0 if it runs lower (Ray's workers
    start at 15); returns whether it now runs at 0. Raising a priority takes a
    privilege (``CAP_SYS_NICE`` or ``RLIMIT_NICE``): without one, ``what`` logs one
    warning that says what to do."""
    try:
        tids = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return True  # not Linux: nothing to do
    refused = False
    for tid in tids:
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

"""The I/O of a shard's warm standby (the rules are in
:mod:`~relay_actors.ray_runtime.shard_standby`): the claims in the KV store, the serving
process's watch socket, the spare's watch of it.

The watch is a Unix-domain socket in a directory only this user can enter: the serving
process listens, its spare connects and reads. Nothing is exchanged but a goodbye (the
serving process leaves on purpose); what matters is that the kernel closes the socket
the moment the serving process dies, however it dies, so the spare learns it at once —
Ray's own notice of an actor's death comes with its restart, 0.6 s or more later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import RelayError
from .actor_messages import NAMESPACE, actor_name
from .shard_standby import (
    GOODBYE,
    Claim,
    Next,
    Seat,
    StandbyState,
    claim_key,
    claims_prefix,
    latest_claim,
    on_start,
    on_unreachable,
    on_watch_lost,
)
from .standby_forwarding import FORWARD_TIMEOUT

__all__ = ["StandbyWatch", "pid_alive"]

log = logging.getLogger("relay_actors.ray_runtime.standby_watch")

#: Seconds between two reads of the claims while there is nothing to watch.
WAIT_INTERVAL = 0.05
#: The longest of those waits (doubling from WAIT_INTERVAL).
MAX_WAIT = 1.0
#: Seconds between a serving process's checks that no newer claim replaced it.
SUPERVISE_INTERVAL = 2.0
#: Seconds a KV read or write may take.
KV_TIMEOUT = 5.0
#: Watchers the serving process holds at most (its spare needs one; more are refused).
MAX_WATCHERS = 4
#: Bytes read at a time from a watch socket (what is read is dropped, or scanned for the goodbye).
READ_CHUNK = 4096


def pid_alive(pid: int) -> bool | None:
    """Whether a live (not zombie) process ``pid`` exists on this host (None: unknown)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return state not in (b"Z", b"X")


class StandbyWatch:
    """One process of a shard with a standby: its claims, its watch socket, its spare's loop.

    Args:
        shard: the shard's number.
        seat: this process's seat.
        app: the app's name (its actors' names: the other seat's, to pass calls on or fence).
    """

    def __init__(self, shard: int, seat: Seat, app: str = "") -> None:
        self.shard = shard
        self.app = app
        self._other: Any = None
        #: The app's :class:`~relay_actors.ray_runtime.kvstore.AppSecrets` (the claims
        #: live with the deploy's state, and go with it): given to :meth:`until_serving`.
        self.secrets: Any = None
        self.state = StandbyState(seat)
        self.host = socket.gethostname()
        self.path = ""
        self._dir = ""
        self._server: asyncio.AbstractServer | None = None
        self._watchers: set[asyncio.StreamWriter] = set()
        #: Watch connections refused (over MAX_WATCHERS).
        self.refused = 0
        self._decided = asyncio.Event()

    @property
    def serving(self) -> bool:
        return self.state.serving is not None

    async def listen(self) -> None:
        """Open the watch socket (before any claim: a claim names it)."""
        self._dir = tempfile.mkdtemp(prefix="rs-")  # (mode 0700: this user only)
        self.path = os.path.join(self._dir, f"s{self.shard}-{self.state.seat.value}-{os.getpid()}.sock")
        self._server = await asyncio.start_unix_server(self._watched, self.path)
        os.chmod(self.path, 0o600)

    async def _watched(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A spare watches: hold the socket until one end goes. Nothing it could send means
        # anything here: read and dropped, a chunk at a time (never kept, never decoded).
        if len(self._watchers) >= MAX_WATCHERS:
            self.refused += 1
            writer.close()
            return
        self._watchers.add(writer)
        try:
            while await reader.read(READ_CHUNK):
                pass
        except OSError:
            pass
        finally:
            self._watchers.discard(writer)
            writer.close()

    async def latest(self) -> Claim | None:
        keys = await asyncio.wait_for(self.secrets.keys(claims_prefix(self.shard)), KV_TIMEOUT)
        term = latest_claim(keys, self.shard)
        if not term:
            return None
        record = await asyncio.wait_for(self.secrets.load(claim_key(self.shard, term)), KV_TIMEOUT)
        return Claim.from_record(record) if record else None

    async def _claim(self, *, takeover: bool) -> bool:
        claim = self.state.next_claim(os.getpid(), self.host, self.path)
        won = await asyncio.wait_for(
            self.secrets.claim(claim_key(self.shard, claim.term), claim.to_record()), KV_TIMEOUT
        )
        previous = self.state.seen
        self.state.claimed(claim, won, takeover=takeover)
        if won:
            log.warning(
                "shard %d: the %s seat serves from term %d%s",
                self.shard,
                self.state.seat.value,
                claim.term,
                f" (took over from pid {previous.pid})" if takeover and previous is not None else "",
            )
        return won

    async def until_serving(self, secrets: Any, fence: Callable[[Claim], Awaitable[None]]) -> float:
        """Be the spare until this process serves: returns the time the decision to serve
        was taken (``time.monotonic()``). ``secrets``: the app's
        :class:`~relay_actors.ray_runtime.kvstore.AppSecrets`; ``fence(previous)`` kills
        the process this one replaces when it may still live (see :meth:`StandbyState.fence`)."""
        self.secrets = secrets
        wait = WAIT_INTERVAL
        while True:
            try:
                latest = await self.latest()
            except Exception as exc:  # the GCS restarting: try again
                log.info("shard %d: claims unreadable (%r)", self.shard, exc)
                await asyncio.sleep(MAX_WAIT)
                continue
            step = on_start(self.state.seat, latest, self.state.seen)
            if latest is not None and step is not Next.WAIT:
                self.state.seen = latest
            self._decided.set()
            lost_at = time.monotonic()
            takeover = False
            if step is Next.WATCH:
                assert latest is not None
                step, lost_at = await self._watch(latest)
                takeover = step is Next.CLAIM
            if step is Next.WAIT:
                await asyncio.sleep(wait)
                wait = min(MAX_WAIT, wait * 2)
                continue
            wait = WAIT_INTERVAL
            previous = self.state.seen
            try:
                won = await self._claim(takeover=takeover)
            except Exception as exc:  # the GCS restarting: read again after a wait
                log.info("shard %d: claim failed (%r)", self.shard, exc)
                await asyncio.sleep(MAX_WAIT)
                continue
            if not won:
                continue  # the other process claimed first: read again, follow it
            if takeover and previous is not None:
                self.state.last_takeover_s = time.monotonic() - lost_at
            if previous is not None and self.state.fence(previous, self.host, pid_alive(previous.pid)):
                await fence(previous)
            return lost_at

    async def _watch(self, latest: Claim) -> tuple[Next, float]:
        """Watch ``latest``'s socket until it closes: what to do then, and when it closed."""
        if latest.host != self.host or not latest.path:
            return on_unreachable(latest, self.host, None), time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(latest.path), KV_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            refused = isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
            alive = pid_alive(latest.pid) if refused else None
            return on_unreachable(latest, self.host, alive), time.monotonic()
        log.info("shard %d: %s seat is the spare of pid %d (term %d)", self.shard,
                 self.state.seat.value, latest.pid, latest.term)  # fmt: skip
        # Only the goodbye means anything: the tail of what was read is kept to find it.
        said = b""
        try:
            while chunk := await reader.read(READ_CHUNK):
                said = (said + chunk)[-2 * len(GOODBYE) :]
        except OSError:
            pass
        finally:
            writer.close()
        closed_at = time.monotonic()
        goodbye = said.endswith(GOODBYE)
        if goodbye:
            self.state.goodbyes += 1
            log.info("shard %d: pid %d left on purpose; not taking over", self.shard, latest.pid)
        else:
            log.warning("shard %d: pid %d is gone; taking over", self.shard, latest.pid)
        return on_watch_lost(goodbye), closed_at

    async def take_seat(self, deadline: float, step_timeout: float) -> None:
        """The actor's part: read the app's secrets (trying again while the GCS restarts,
        until ``deadline`` on the loop's clock), open the watch socket, and be the spare
        until this process serves."""
        from .kvstore import AppSecrets

        loop = asyncio.get_running_loop()
        while True:
            try:
                secrets = await asyncio.wait_for(AppSecrets.open(self.app), step_timeout)
                break
            except RelayError:
                raise
            except Exception as exc:  # the GCS restarting
                if loop.time() > deadline:
                    raise
                log.info("shard %d: secrets not readable yet (%r)", self.shard, exc)
                await asyncio.sleep(0.5)
        await self.listen()
        await self.until_serving(secrets, self.fence)

    def other(self) -> Any:
        """The other seat's actor handle (a named actor's handle outlives its restarts)."""
        if self._other is None:
            import ray

            role = "standby" if self.state.seat is Seat.MAIN else "connection"
            self._other = ray.get_actor(actor_name(self.app, role, self.shard), namespace=NAMESPACE)
        return self._other

    async def fence(self, previous: Claim) -> None:
        """This process took over while the one it replaced may still live (its socket
        closed, its process did not go): kill it, so that the shard is served once."""
        import ray

        log.error("shard %d: killing pid %d, which this process replaced", self.shard, previous.pid)
        try:
            ray.kill(self.other(), no_restart=False)
        except Exception as exc:
            log.warning("shard %d: could not kill the replaced process (%r)", self.shard, exc)

    def superseded(self) -> None:
        """A newer claim than this process's exists: its spare took over. Exit at once
        (Ray restarts this seat, which becomes the spare) rather than serve twice."""
        log.error("shard %d: replaced by the other seat while still alive; exiting", self.shard)
        os._exit(1)

    async def spare_for(self, failed: Callable[[], bool]) -> Any:
        """The serving process's handle if this process is the spare; None if it serves, or
        will (its start-up is then awaited as usual), or its start-up ``failed()``."""
        if self.serving:
            return None
        await asyncio.wait_for(self.decided(), FORWARD_TIMEOUT)
        if self.serving or failed():
            return None
        return self.other()

    async def decided(self) -> None:
        """Until this process has read the claims once (it knows whom it serves for)."""
        await self._decided.wait()

    def decided_anyway(self) -> None:
        """Taking the role failed: those waiting on :meth:`decided` go on (and fail)."""
        self._decided.set()

    async def supervise(self, on_superseded: Callable[[], None]) -> None:
        """While serving: every ``SUPERVISE_INTERVAL`` s, check that no newer claim exists
        (``on_superseded`` is called once if one does)."""
        while True:
            await asyncio.sleep(SUPERVISE_INTERVAL)
            try:
                keys = await asyncio.wait_for(self.secrets.keys(claims_prefix(self.shard)), KV_TIMEOUT)
            except Exception:  # the GCS restarting: check at the next tick
                continue
            if self.state.superseded(latest_claim(keys, self.shard)):
                on_superseded()
                return

    async def goodbye(self) -> None:
        """Leaving on purpose: tell the spare not to take over, and close the socket."""
        for writer in list(self._watchers):
            with contextlib.suppress(Exception):
                writer.write(GOODBYE)
                await asyncio.wait_for(writer.drain(), 1.0)
                writer.close()
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def stats(self) -> dict[str, Any]:
        return {**self.state.stats(), "watchers": len(self._watchers), "watchers_refused": self.refused}

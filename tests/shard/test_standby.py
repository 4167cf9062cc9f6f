"""A shard's warm standby: the rules (fed by hand), a model of two seats' processes dying,
restarting and racing for claims (hypothesis), and the watch over real Unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay_actors.ray_runtime.shard_standby import (
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
from relay_actors.ray_runtime.standby_watch import StandbyWatch, pid_alive

MAIN, STANDBY = Seat.MAIN, Seat.STANDBY


# --- the rules ---------------------------------------------------------------------------


def test_nothing_claimed_the_main_slot_claims_the_standby_waits() -> None:
    assert on_start(MAIN, None) is Next.CLAIM
    assert on_start(STANDBY, None) is Next.WAIT


def test_a_claim_of_this_slot_is_an_earlier_process_of_it_a_restart_claims() -> None:
    assert on_start(MAIN, Claim(3, MAIN)) is Next.CLAIM
    assert on_start(STANDBY, Claim(4, STANDBY)) is Next.CLAIM


def test_a_read_showing_less_than_was_seen_is_not_claimed_over() -> None:
    seen = Claim(10, STANDBY)
    assert on_start(MAIN, None, seen) is Next.WAIT
    assert on_start(MAIN, Claim(9, MAIN), seen) is Next.WAIT
    assert on_start(MAIN, Claim(10, STANDBY), seen) is Next.WATCH
    assert on_start(MAIN, Claim(11, MAIN), seen) is Next.CLAIM


def test_a_claim_of_the_other_slot_is_watched() -> None:
    assert on_start(MAIN, Claim(2, STANDBY)) is Next.WATCH
    assert on_start(STANDBY, Claim(1, MAIN)) is Next.WATCH


def test_a_goodbye_is_no_takeover_a_closed_socket_is() -> None:
    assert on_watch_lost(said_goodbye=True) is Next.WAIT
    assert on_watch_lost(said_goodbye=False) is Next.CLAIM


def test_an_unreachable_socket_is_taken_over_only_if_the_process_is_known_gone() -> None:
    claim = Claim(1, MAIN, pid=10, host="h", path="/s")
    assert on_unreachable(claim, "h", peer_alive=False) is Next.CLAIM
    # Alive (paused, or not listening yet) or unknown: never replaced by its spare.
    assert on_unreachable(claim, "h", peer_alive=True) is Next.WAIT
    assert on_unreachable(claim, "h", peer_alive=None) is Next.WAIT
    # Another host: nothing to watch, Ray's restart is the failover.
    assert on_unreachable(claim, "other", peer_alive=False) is Next.WAIT


def test_claims_sort_by_term_and_the_latest_is_found() -> None:
    keys = [claim_key(0, e) for e in (1, 2, 10)] + [claim_key(1, 99), "shard/0/resume"]
    assert sorted(keys[:3]) == keys[:3]
    assert latest_claim(keys, 0) == 10
    assert latest_claim(keys, 1) == 99
    assert latest_claim([], 0) == 0
    assert claims_prefix(0) == "shard/0/term/"


def test_state_counts_takeovers_lost_claims_and_knows_when_it_is_superseded() -> None:
    state = StandbyState(STANDBY, seen=Claim(1, MAIN, pid=5))
    claim = state.next_claim(pid=6, host="h", path="/p")
    assert claim == Claim(2, STANDBY, 6, "h", "/p")
    state.claimed(claim, won=False, takeover=True)
    assert (state.serving, state.claims_lost, state.takeovers) == (None, 1, 0)
    state.claimed(claim, won=True, takeover=True)
    assert (state.serving, state.takeovers) == (claim, 1)
    assert not state.superseded(2)
    assert state.superseded(3)
    assert state.stats()["role"] == "serving" and state.stats()["term"] == 2
    assert Claim.from_record(claim.to_record()) == claim


def test_fence_only_a_live_or_unknown_process_of_the_other_seat() -> None:
    state = StandbyState(STANDBY)
    other = Claim(1, MAIN, pid=5, host="h")
    assert state.fence(other, "h", peer_alive=True)
    assert state.fence(other, "h", peer_alive=None)
    assert not state.fence(other, "h", peer_alive=False)
    assert not state.fence(Claim(1, STANDBY, pid=5, host="h"), "h", peer_alive=True)  # own seat: a restart
    assert not state.fence(None, "h", peer_alive=True)


# --- a model: two seats, processes that die, restart and race -----------------------------


@dataclass
class Proc:
    seat: Seat
    pid: int
    state: StandbyState
    watching: Claim | None = None
    alive: bool = True
    #: The socket it watched closed (its claimant died): the EOF still to be delivered.
    eof: bool = False


@dataclass
class Model:
    claims: dict[int, Claim] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    next_pid: int = 100

    def latest(self) -> Claim | None:
        return self.claims[max(self.claims)] if self.claims else None

    def live(self, seat: Seat) -> Proc | None:
        return next((p for p in self.procs if p.alive and p.seat is seat), None)

    def start(self, seat: Seat) -> None:
        if self.live(seat) is None:
            self.next_pid += 1
            self.procs.append(Proc(seat, self.next_pid, StandbyState(seat)))

    def kill(self, seat: Seat) -> None:
        proc = self.live(seat)
        if proc is None:
            return
        proc.alive = False
        for p in self.procs:
            if p.alive and p.watching is not None and p.watching.pid == proc.pid:
                p.eof = True  # the kernel closes the watch socket

    def claim(self, proc: Proc, takeover: bool) -> None:
        claim = proc.state.next_claim(proc.pid, "h", "/s")
        won = claim.term not in self.claims  # put-if-absent
        if won:
            latest = self.latest()
            # A claim never replaces a live server: only a dead one (or nothing) is succeeded.
            assert latest is None or not any(p.alive and p.pid == latest.pid for p in self.procs), (
                f"{proc.seat.value} claimed term {claim.term} over live pid {latest.pid}"
            )
            self.claims[claim.term] = claim
        proc.state.claimed(claim, won, takeover=takeover)
        proc.watching = None

    def stale(self, seat: Seat) -> None:
        """A turn whose read of the claims came back empty (a store that lost its keys)."""
        self.step(seat, stale=True)

    def refused(self, seat: Seat) -> None:
        """A turn whose connect to a live claimant's socket failed (not listening yet)."""
        self.step(seat, refused=True)

    def step(self, seat: Seat, stale: bool = False, refused: bool = False) -> None:
        """One turn of the live process of ``seat``, as StandbyWatch.until_serving runs it."""
        proc = self.live(seat)
        if proc is None:
            return
        if proc.state.serving is not None:
            latest = self.latest()
            if latest is not None and proc.state.superseded(latest.term):
                proc.alive = False  # exits at once
            return
        if proc.watching is not None:
            if proc.eof:
                proc.eof = False
                if on_watch_lost(said_goodbye=False) is Next.CLAIM:
                    self.claim(proc, takeover=True)
            return
        latest = None if stale else self.latest()
        step = on_start(seat, latest, proc.state.seen)
        if latest is not None and step is not Next.WAIT:
            proc.state.seen = latest
        if step is Next.CLAIM:
            self.claim(proc, takeover=False)
        elif step is Next.WATCH:
            assert latest is not None
            owner = next(p for p in self.procs if p.pid == latest.pid)
            if owner.alive and refused:
                assert on_unreachable(latest, "h", peer_alive=True) is Next.WAIT
            elif owner.alive:
                proc.watching = latest
            elif on_unreachable(latest, "h", peer_alive=False) is Next.CLAIM:
                self.claim(proc, takeover=True)

    def serving(self) -> list[Proc]:
        """Live processes that serve under the latest claim."""
        latest = self.latest()
        return [
            p for p in self.procs
            if p.alive and p.state.serving is not None and latest is not None
            and p.state.serving.term == latest.term
        ]  # fmt: skip


EVENTS = st.sampled_from(["start", "kill", "step", "stale", "refused"])
SLOTS = st.sampled_from([MAIN, STANDBY])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(EVENTS, SLOTS), max_size=60))
def test_model_at_most_one_process_serves_and_a_live_one_always_comes_to(events: list[Any]) -> None:
    model = Model()
    model.start(MAIN)
    model.start(STANDBY)
    for event, seat in events:
        getattr(model, event)(seat)
        # Never two live processes serving the latest claim (a stale server exits at its next check).
        assert len(model.serving()) <= 1
        for p in model.procs:
            assert not (p.alive and p.state.serving is not None and p.state.serving.term > max(model.claims))
    # Ray restarts every seat, and each process runs until nothing changes: exactly one serves.
    model.start(MAIN)
    model.start(STANDBY)
    for _ in range(6):
        model.step(MAIN)
        model.step(STANDBY)
    assert len(model.serving()) == 1
    spare = [p for p in model.procs if p.alive and p.state.serving is None]
    assert len(spare) == 1 and spare[0].watching is not None, "the other seat is the spare, watching"


def test_model_a_restarted_process_that_could_not_watch_claims_nothing_over_an_empty_read() -> None:
    """The path hypothesis rarely walks: the main seat dies, the standby takes over, Ray
    restarts the main seat, whose connect to the standby's socket fails (not listening
    yet), then whose read of the claims comes back empty: it must not claim over the
    standby serving (it would kill it)."""
    model = Model()
    for event, seat in [("start", MAIN), ("start", STANDBY), ("step", MAIN), ("step", STANDBY),
                        ("kill", MAIN), ("step", STANDBY), ("start", MAIN), ("refused", MAIN),
                        ("stale", MAIN), ("step", MAIN)]:  # fmt: skip
        getattr(model, event)(seat)
    assert [p.seat for p in model.serving()] == [STANDBY]
    assert max(model.claims) == 2


# --- the watch, over real Unix sockets ------------------------------------------------------


class MemorySecrets:
    """The part of AppSecrets the watch uses, in memory (put-if-absent as the KV store's)."""

    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}

    async def claim(self, key: str, value: Any) -> bool:
        if key in self.kv:
            return False
        self.kv[key] = value
        return True

    async def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.kv if k.startswith(prefix))

    async def load(self, key: str) -> Any:
        return self.kv.get(key)


async def _serving(watch: StandbyWatch, secrets: MemorySecrets, fenced: list[Claim]) -> None:
    async def fence(previous: Claim) -> None:
        fenced.append(previous)

    await watch.listen()
    await watch.until_serving(secrets, fence)


async def _until(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _served_and_watched(
    secrets: MemorySecrets, fenced: list[Claim] | None = None
) -> AsyncIterator[tuple[StandbyWatch, StandbyWatch, asyncio.Future[None]]]:
    """Shard 0's main seat serving (term 1) and its standby watching it as the spare:
    ``(main, spare, the spare's task until it serves)``."""
    fenced = [] if fenced is None else fenced
    main, spare = StandbyWatch(0, MAIN), StandbyWatch(0, STANDBY)
    await _serving(main, secrets, fenced)
    assert main.serving and main.state.serving is not None and main.state.serving.term == 1
    task = asyncio.ensure_future(_serving(spare, secrets, fenced))
    try:
        await _until(lambda: len(main._watchers) == 1)
        assert not spare.serving
        yield main, spare, task
    finally:
        task.cancel()
        await spare.close()


async def test_the_spare_takes_over_when_the_serving_socket_closes_without_a_goodbye() -> None:
    secrets = MemorySecrets()
    fenced: list[Claim] = []
    async with _served_and_watched(secrets, fenced) as (main, spare, task):
        # The serving process dies: its sockets close (here: closed without a word).
        for writer in list(main._watchers):
            writer.transport.abort()
        await main.close()
        await asyncio.wait_for(task, 5)
        assert spare.serving and spare.state.serving is not None
        assert spare.state.serving.term == 2 and spare.state.takeovers == 1
        assert spare.stats()["last_takeover_s"] is not None
        # Its process (this one) still lives: the spare fences it.
        assert [c.term for c in fenced] == [1]
        assert main.state.superseded(latest_claim(await secrets.keys("shard/0/term/"), 0))


async def test_a_goodbye_is_not_taken_over() -> None:
    secrets = MemorySecrets()
    async with _served_and_watched(secrets) as (main, spare, _task):
        await main.goodbye()
        await _until(lambda: spare.state.goodbyes == 1)
        # The claimant's process (this one) lives on: the spare waits, it does not claim.
        await asyncio.sleep(0.3)  # (several of the spare's read intervals: it must not claim)
        assert not spare.serving and sorted(secrets.kv) == [claim_key(0, 1)]


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    code = "import os; print(os.getpid())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(gone.stdout)


async def test_a_claimant_found_gone_without_a_socket_is_taken_over(dead_pid: int, tmp_path: Any) -> None:
    """The serving process died before its spare connected: nothing listens at its
    socket's path, and no process has its pid."""
    secrets = MemorySecrets()
    assert pid_alive(dead_pid) is False
    path = str(tmp_path / "no-such.sock")
    secrets.kv[claim_key(3, 1)] = Claim(1, MAIN, dead_pid, socket.gethostname(), path).to_record()
    spare = StandbyWatch(3, STANDBY)
    fenced: list[Claim] = []
    try:
        await asyncio.wait_for(_serving(spare, secrets, fenced), 5)
        assert spare.state.serving is not None and spare.state.serving.term == 2
        assert fenced == []  # known gone: nothing to fence
    finally:
        await spare.close()


def test_pid_alive_reads_this_process_and_refuses_nonsense() -> None:
    assert pid_alive(os.getpid()) is True
    assert pid_alive(0) is None


@pytest.mark.parametrize("seat", [MAIN, STANDBY])
async def test_a_restart_of_the_serving_slot_claims_over_its_own_earlier_claim(seat: Seat) -> None:
    secrets = MemorySecrets()
    secrets.kv[claim_key(0, 5)] = Claim(5, seat, 1, "elsewhere", "").to_record()
    watch = StandbyWatch(0, seat)
    try:
        await _serving(watch, secrets, [])
        assert watch.state.serving is not None and watch.state.serving.term == 6
        assert watch.state.takeovers == 0
    finally:
        await watch.close()


async def test_a_hostile_peer_on_the_watch_socket_is_read_and_dropped_and_capped(tmp_path: Any) -> None:
    """The watch socket is this user's only (0600 in a 0700 directory), yet what arrives on
    it is never kept nor decoded: a pickle that would create a file is read and dropped,
    and connections beyond MAX_WATCHERS are refused; the serving process serves on."""
    import pickle

    from relay_actors.ray_runtime.standby_watch import MAX_WATCHERS

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))

    secrets = MemorySecrets()
    main = StandbyWatch(0, MAIN)
    await _serving(main, secrets, [])
    assert os.stat(main.path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(main.path)).st_mode & 0o777 == 0o700
    try:
        peers = [await asyncio.open_unix_connection(main.path) for _ in range(MAX_WATCHERS + 2)]
        _, first = peers[0]
        first.write(pickle.dumps(Evil()) * 1000 + os.urandom(1 << 20))
        await first.drain()
        await _until(lambda: main.refused == 2)
        assert len(main._watchers) == MAX_WATCHERS and not marker.exists()
        for _, writer in peers:
            writer.close()
        await _until(lambda: not main._watchers)
        # Still serving, still watchable.
        assert main.serving and main.stats()["watchers_refused"] == 2
        _, again = await asyncio.open_unix_connection(main.path)
        await _until(lambda: len(main._watchers) == 1)
        again.close()
    finally:
        await main.close()


async def test_a_spare_takes_over_only_on_a_goodbye_at_the_end() -> None:
    """Bytes before the close that are not the goodbye (or contain it mid-stream) are no goodbye."""
    secrets = MemorySecrets()
    async with _served_and_watched(secrets) as (main, spare, task):
        for writer in list(main._watchers):
            writer.write(b"bye\nnot a goodbye at the end" * 1000)
            await writer.drain()
            writer.transport.abort()
        await main.close()
        await asyncio.wait_for(task, 5)
        assert spare.serving and spare.state.takeovers == 1 and spare.state.goodbyes == 0

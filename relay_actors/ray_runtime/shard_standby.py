"""A shard's warm standby, sans-IO: which of a shard's two processes serves it, and when
the waiting one takes over.

Ray restarts a killed connection actor 0.6-1.3 s after the kill before our start-up even
begins (a worker process to start, Ray imported, the class loaded): calls stop for that
long. With ``RayOptions(standby_connections=True)`` each shard has a second actor, its
*standby* seat (``relay:<app>:standby:<n>``, beside the *main* seat
``relay:<app>:connection:<n>``, on the same node), whose process is up and has imported
everything. One of the two **serves** the shard (the RELAY session, the links, the
leases); the other is its **spare**: it holds a Unix-domain socket to the serving process,
which the kernel closes the instant that process dies, and then runs the shard's normal
restart start-up (:mod:`~relay_actors.ray_runtime.shard_startup`: resume the session,
rebuild from the CallActors) in a process that is already warm. Ray meanwhile restarts
the dead seat, whose new process finds the shard served and becomes the spare.

Who serves is decided by **terms** in the KV store: a process serves only after it
claimed term *n + 1* over the claim *n* it saw, and a claim is a put-if-absent, so of
two processes that try, exactly one wins. A claim names its seat, process and watch
socket. The rules (:func:`on_start`, :func:`on_watch_lost`, :func:`on_unreachable`):

* nothing claimed yet: the main seat claims; the standby waits for it (a read that
  shows less than this process saw before is not believed: it reads again);
* the last claim is this seat's own: an earlier process of this seat served and is
  gone (Ray restarted it): claim, as a plain restart would;
* the last claim is the other seat's: be its spare — watch its socket;
* the watch ends with the serving process saying goodbye (the app stops): no takeover;
  read the claims again;
* the watch ends otherwise (the process died, or exited to be restarted): claim;
* the socket cannot be reached: claim only if the claimant's process is known to be
  gone (same host, no such live process); else wait — a process that is only paused
  (SIGSTOP) keeps its socket and is never replaced by its spare, and a spare on another
  host cannot watch and leaves the failover to Ray's restart.

A serving process that sees a newer claim than its own (:meth:`StandbyState.superseded`)
has been replaced while it was alive — paused long enough for its spare to see its
process gone, say — and exits at once rather than serve a session twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Claim",
    "Next",
    "Seat",
    "StandbyState",
    "claim_key",
    "claims_prefix",
    "latest_claim",
    "on_start",
    "on_unreachable",
    "on_watch_lost",
]

#: What the serving process writes on its watch sockets before it closes them on purpose.
GOODBYE = b"bye\n"


class Seat(str, enum.Enum):
    """The shard's two actors."""

    MAIN = "main"  # relay:<app>:connection:<n>
    STANDBY = "standby"  # relay:<app>:standby:<n>

    @property
    def other(self) -> Seat:
        return Seat.STANDBY if self is Seat.MAIN else Seat.MAIN


class Next(str, enum.Enum):
    """What a process that does not serve does next."""

    CLAIM = "claim"  # claim the term after the last one seen
    WATCH = "watch"  # be the spare of the last claimant: watch its socket
    WAIT = "wait"  # read the claims again a little later


@dataclass(frozen=True, slots=True)
class Claim:
    """One term's claim: who served the shard from then on."""

    term: int
    seat: Seat
    pid: int = 0
    host: str = ""
    #: The claimant's watch socket (a Unix-domain socket on ``host``).
    path: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"term": self.term, "seat": self.seat.value, "pid": self.pid, "host": self.host,
                "path": self.path}  # fmt: skip

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Claim:
        return cls(
            int(record["term"]),
            Seat(record["seat"]),
            int(record.get("pid", 0)),
            str(record.get("host", "")),
            str(record.get("path", "")),
        )


def claims_prefix(shard: int) -> str:
    """KV keys of a shard's claims (one per term, never overwritten)."""
    return f"shard/{shard}/term/"


def claim_key(shard: int, term: int) -> str:
    # Zero-padded: the keys sort as the terms do.
    return f"{claims_prefix(shard)}{term:010d}"


def latest_claim(keys: list[str], shard: int) -> int:
    """The last term claimed, from the KV keys under :func:`claims_prefix` (0: none)."""
    prefix = claims_prefix(shard)
    terms = [int(k[len(prefix) :]) for k in keys if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    return max(terms, default=0)


def on_start(seat: Seat, latest: Claim | None, seen: Claim | None = None) -> Next:
    """A process that does not serve (yet) read ``latest``, having seen ``seen`` before:
    what it does next. A read older than what was seen (a store that answered from a
    stale copy, or lost a key) is never claimed over: read again."""
    if seen is not None and (latest is None or latest.term < seen.term):
        return Next.WAIT
    if latest is None:
        return Next.CLAIM if seat is Seat.MAIN else Next.WAIT
    if latest.seat is seat:
        return Next.CLAIM  # this seat's earlier process served and is gone: a restart
    return Next.WATCH


def on_watch_lost(said_goodbye: bool) -> Next:
    """The watched socket closed: the serving process died (take over) or left on
    purpose (the app stops: read the claims again, no takeover)."""
    return Next.WAIT if said_goodbye else Next.CLAIM


def on_unreachable(latest: Claim, host: str, peer_alive: bool | None) -> Next:
    """The claimant's socket could not be reached. ``peer_alive``: whether a live process
    with its pid exists here (None: not known)."""
    if latest.host != host or not latest.path:
        return Next.WAIT  # another host: nothing to watch; Ray's restart is the failover
    return Next.CLAIM if peer_alive is False else Next.WAIT


@dataclass(slots=True)
class StandbyState:
    """One process's view: its seat, whether it serves, the terms it saw and claimed."""

    seat: Seat
    #: The claim this process serves under (None: it does not serve).
    serving: Claim | None = None
    #: The last claim it saw (while a spare: the one it watches).
    seen: Claim | None = None
    #: Takeovers: claims won after watching another process (not first starts or restarts).
    takeovers: int = 0
    #: Claims lost to the other process (both tried the same term).
    claims_lost: int = 0
    #: Watches that ended with a goodbye (no takeover).
    goodbyes: int = 0
    #: Seconds from the watch's end (or the unreachable peer's discovery) to serving, at the last takeover.
    last_takeover_s: float | None = None

    def next_claim(self, pid: int, host: str, path: str) -> Claim:
        """The claim this process tries next: the term after the last one seen."""
        term = self.seen.term + 1 if self.seen is not None else 1
        return Claim(term, self.seat, pid, host, path)

    def claimed(self, claim: Claim, won: bool, *, takeover: bool) -> None:
        if not won:
            self.claims_lost += 1
            return
        previous = self.seen
        self.serving = claim
        self.seen = claim
        if takeover and previous is not None and previous.seat is not self.seat:
            self.takeovers += 1

    def superseded(self, latest_term: int) -> bool:
        """A newer claim exists than the one this process serves under: it must stop."""
        return self.serving is not None and latest_term > self.serving.term

    def fence(self, previous: Claim | None, host: str, peer_alive: bool | None) -> bool:
        """Whether to kill the process this one replaced: only a process of the other
        seat that may still be alive (its socket closed but the process lives on)."""
        if previous is None or previous.seat is self.seat:
            return False
        if previous.host != host:
            return True  # cannot tell from here: make sure
        return peer_alive is not False

    def stats(self) -> dict[str, Any]:
        known = self.serving or self.seen
        return {
            "seat": self.seat.value,
            "role": "serving" if self.serving is not None else "spare",
            "term": known.term if known is not None else 0,
            "takeovers": self.takeovers,
            "claims_lost": self.claims_lost,
            "goodbyes": self.goodbyes,
            "last_takeover_s": round(self.last_takeover_s, 4) if self.last_takeover_s is not None else None,
        }

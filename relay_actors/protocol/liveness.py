"""What an expired request timer means when our own loop may have stalled, sans-IO.

A handler that calls blocking code, a long GC pause, SIGSTOP or a frozen VM
stops the event loop. When it runs again, every timer that came due meanwhile
fires at once — possibly before the loop has read the replies waiting in the
socket, and for requests that were not even written until the stall ended
(frames leave at the end of a loop iteration). Taken at face value, such a
timer fails a request the server answered, and its silence is taken for a
half-open socket.

:class:`Liveness` keeps a clock that excludes our own stalls ("awake" time:
loop time minus the time the loop was seen blocked). A stall is seen through
the lateness of our own callbacks (a timer's or a write's scheduled time
against the time it ran). With it:

- a timer that fires late never decides: it is re-armed for what is left of
  its timeout in awake time, and for at least a grace period, so the loop
  reads what arrived and the peer gets a turn to answer what we only just sent;
- a request times out only after its full timeout of awake time;
- the socket is judged half-open only when the peer itself has been silent
  (nothing read from it) for that long in awake time, not because one timer
  came due while we were not looking.

Nothing here reads a clock: the driver passes ``now`` (its loop's time).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLOCKING_STALL", "BLOCKING_WINDOW", "STALL_TOLERANCE", "Expiry", "Liveness"]

#: A callback this late (seconds) means the loop was blocked, not merely busy.
STALL_TOLERANCE = 0.05
#: A stall this long (seconds) is a handler blocking the loop (blocking I/O, ``time.sleep``),
#: not a busy iteration (a burst's frames, a GC pause)...
BLOCKING_STALL = 1.0
#: ...and for this long after one, the loop counts as one whose handlers block.
BLOCKING_WINDOW = 10.0


@dataclass(frozen=True, slots=True)
class Expiry:
    """The verdict on a request timer that fired.

    ``rearm`` > 0: not decided; look again in that many seconds (``grace``: as the
    one grace turn after a stall, past the request's awake deadline). Otherwise the
    request timed out, and ``half_open`` says whether the peer's silence condemns
    the socket.
    """

    rearm: float = 0.0
    half_open: bool = False
    grace: bool = False


class Liveness:
    """The awake clock of one loop and the peer's silence on it (see the module docstring).

    Args:
        tolerance: lateness (s) beyond which a callback counts as a stall.
    """

    __slots__ = ("_blocked_until", "_blocking_until", "heard", "stalled", "stalls", "tolerance")

    def __init__(self, tolerance: float = STALL_TOLERANCE) -> None:
        self.tolerance = tolerance
        #: Seconds our loop was seen blocked, in all (overlapping sightings once).
        self.stalled = 0.0
        #: How many separate stalls were seen.
        self.stalls = 0
        #: Awake time of the last frame read from the peer (or of the socket's start).
        self.heard = 0.0
        self._blocked_until = float("-inf")
        self._blocking_until = float("-inf")

    def awake(self, now: float) -> float:
        """``now`` (loop time) on the clock that excludes our own stalls."""
        return now - self.stalled

    def late(self, scheduled: float, now: float) -> bool:
        """A callback due at ``scheduled`` ran at ``now``: count any stall it shows.

        Sightings of one stall by several callbacks overlap and count once.
        Returns True when this callback was late enough to count as stalled.
        """
        if now - scheduled <= self.tolerance:
            return False
        start = max(scheduled, self._blocked_until)
        if start < now:
            if scheduled >= self._blocked_until:
                self.stalls += 1
            self.stalled += now - start
            self._blocked_until = now
        if now - scheduled >= BLOCKING_STALL:
            self._blocking_until = now + BLOCKING_WINDOW
        return True

    def handlers_block(self, now: float) -> bool:
        """Whether a stall of :data:`BLOCKING_STALL` or more ended within the last
        :data:`BLOCKING_WINDOW` seconds: handlers are calling blocking code, so a frame held
        for the end of the loop iteration may wait behind the next one's block."""
        return now < self._blocking_until

    def heard_from_peer(self, now: float) -> None:
        """A frame was read from the peer (or a new socket opened) at ``now``."""
        self.heard = now - self.stalled

    def silent_for(self, now: float) -> float:
        """How long the peer has said nothing, in awake time."""
        return now - self.stalled - self.heard

    def expired(
        self, started: float, timeout: float, scheduled: float, now: float, graced: bool = False
    ) -> Expiry:
        """A request timer due at ``scheduled`` fired at ``now``.

        Args:
            started: the request's start in awake time (:meth:`awake` when it was made).
            timeout: the request's timeout, in awake time.
            graced: this timer is the grace turn an earlier verdict gave: a request past
                its awake deadline gets one, so a loop late on every timer (overloaded,
                not stalled) still times requests out.
        """
        was_late = self.late(scheduled, now)
        left = timeout - (self.awake(now) - started)
        if left > self.tolerance:
            return Expiry(rearm=left)
        if was_late and not graced:
            # Never decide on a late timer: first a read turn and a chance for the peer.
            return Expiry(rearm=min(1.0, timeout / 2), grace=True)
        return Expiry(half_open=self.silent_for(now) >= timeout)

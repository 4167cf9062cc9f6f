"""When a RELAY client tries again, starts a fresh session or gives up: the reconnect policy, sans-IO.

The connection (the shell) makes the attempts and tells this policy how each one
ended; the policy answers what comes next (:class:`Next`):

- a refused resume (the server no longer knows our session): a fresh session at
  once (the official SDK keeps offering the dead protocol and never gets back in);
- a rejected authentication before the first success: retried with backoff, and
  given up after ``max_failures`` in a row (the credentials are wrong);
- a transport error that says the settings are wrong (a host that does not resolve,
  a TLS mismatch, an untrusted certificate), before the first success: likewise
  given up after ``max_failures``. Once authenticated, the settings are proven: a
  transport error is the network, and is retried for ever;
- anything else: retried with backoff.

Delays come from :class:`~relay_actors.backoff.Backoff`: the first attempt of an
outage goes at once, and only a successful authentication resets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backoff import Backoff

__all__ = ["Next", "ReconnectPolicy"]


@dataclass(frozen=True, slots=True)
class Next:
    """What follows a failed attempt: wait ``delay`` seconds and try again (with
    ``fresh_session``, after dropping the resume state), or ``give_up``."""

    delay: float = 0.0
    fresh_session: bool = False
    give_up: bool = False


class ReconnectPolicy:
    """The reconnect decisions of one connection (see the module docstring).

    Args:
        backoff: the delays between attempts (its state is this policy's).
        max_failures: rejections, and first-contact errors, tolerated in a row before
            the first successful authentication.
    """

    __slots__ = ("authenticated_ever", "backoff", "max_failures", "rejections", "setup_failures")

    def __init__(self, backoff: Backoff, max_failures: int) -> None:
        self.backoff = backoff
        self.max_failures = max_failures
        #: Authenticated at least once: the settings are proven.
        self.authenticated_ever = False
        #: Rejected authentications in a row before the first success.
        self.rejections = 0
        #: First-contact errors (settings suspected) before the first success.
        self.setup_failures = 0

    @property
    def settings_proven(self) -> bool:
        """A successful authentication happened: a transport error no longer says the
        settings are wrong (a reset is the network, not a TLS mismatch)."""
        return self.authenticated_ever

    def outage_delay(self, at_start: bool = False) -> float:
        """The wait before an outage's first attempt: a few ms of jitter (more after a
        connection that flapped); none at start-up. The backoff counts it either way."""
        delay = self.backoff.next_delay()
        return 0.0 if at_start else delay

    def authenticated(self) -> None:
        """An attempt succeeded: the next outage starts afresh."""
        self.authenticated_ever = True
        self.rejections = 0
        self.backoff.reset()

    def lost(self, lived: float) -> None:
        """The connection dropped ``lived`` seconds after it came up."""
        self.backoff.lost_after(lived)

    def rejected(self, resuming: bool) -> Next:
        """The server rejected ``signalwire.connect``; ``resuming``: it offered a session
        to resume (then it is the session that was refused, not the credentials)."""
        if resuming:
            return Next(0.0, fresh_session=True)
        if not self.authenticated_ever:
            self.rejections += 1
            if self.rejections >= self.max_failures:
                return Next(give_up=True)
        return self.retry()

    def unreachable(self, misconfigured: bool) -> Next:
        """The socket did not open; ``misconfigured``: its error says the settings are
        wrong (counted only while they are not :attr:`settings_proven`)."""
        if misconfigured and not self.authenticated_ever:
            self.setup_failures += 1
            if self.setup_failures >= self.max_failures:
                return Next(give_up=True)
        return self.retry()

    def retry(self) -> Next:
        """Any other failure: try again after the backoff's next delay."""
        return Next(self.backoff.next_delay())

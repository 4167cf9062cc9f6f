"""Reconnect delays: the first attempt at once, then exponential from 1 s to a 30 s cap,
with jitter.

A dropped socket or a server's ``signalwire.disconnect`` is usually over at
once (a load balancer moved us, a server restarted): the first attempt goes
immediately, after a small random jitter (up to ``first_jitter``, 50 ms) so a
fleet cut off together does not arrive in the same millisecond. If that
attempt fails, the backoff continues from ``initial``: an immediate retry is
spent once per outage, never repeated. A connection that was lost within
``initial`` seconds of coming up gets no immediate attempt (a server that
accepts and drops at once is not hammered).

The official SDKs use no jitter, so a fleet of clients cut off together
reconnects in lockstep; here each delay is drawn from the upper quarter below
its nominal value (never above the cap). The delay resets only after a
*successful authentication*: the SDKs reset it whenever a socket opens, so a
server that accepts sockets and then rejects or drops them is hammered every
second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .protocol import constants as c

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delay sequence for reconnect attempts."""

    initial: float = c.BACKOFF_MIN
    factor: float = c.BACKOFF_FACTOR
    cap: float = c.BACKOFF_MAX
    #: Fraction of the nominal delay that is randomised away (0 = no jitter).
    jitter: float = 0.25
    #: The first attempt waits up to this long (random); 0 with no jitter at all.
    first_jitter: float = 0.05
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def nominal(self) -> float:
        """The un-jittered delay of the next attempt (0: the first, immediate one)."""
        if self.attempts == 0:
            return 0.0
        try:
            return min(self.cap, self.initial * self.factor ** (self.attempts - 1))
        except OverflowError:  # factor**attempts past the float range (~1000 attempts)
            return self.cap

    def next_delay(self) -> float:
        """The delay to wait before the next attempt (and count the attempt)."""
        first = self.attempts == 0
        nominal = self.nominal()
        self.attempts += 1
        if first:
            return self.first_jitter * self.rng.random() if self.jitter else 0.0
        return nominal * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """After a successful authentication: the next outage starts with an immediate attempt."""
        self.attempts = 0

    def lost_after(self, lived: float) -> None:
        """A connection was lost ``lived`` seconds after it came up: one that did not
        live ``initial`` seconds gets no immediate attempt (a flapping server)."""
        if lived < self.initial:
            self.attempts = max(self.attempts, 1)

    def options(self) -> dict[str, float]:
        """The settings (not the state): what travels to a Ray connection actor."""
        return {name: float(getattr(self, name)) for name in _SETTINGS}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Backoff:
        """A fresh Backoff from :meth:`options` (missing ones: the defaults)."""
        settings: dict[str, Any] = {name: float(options[name]) for name in _SETTINGS if name in options}
        return cls(**settings)


_SETTINGS = ("initial", "factor", "cap", "jitter", "first_jitter")

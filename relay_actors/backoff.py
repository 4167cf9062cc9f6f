"""Reconnect delays: exponential from 1 s to a 30 s cap, with jitter.

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
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def nominal(self) -> float:
        """The un-jittered delay of the next attempt."""
        try:
            return min(self.cap, self.initial * self.factor**self.attempts)
        except OverflowError:  # factor**attempts past the float range (~1000 attempts)
            return self.cap

    def next_delay(self) -> float:
        """The delay to wait before the next attempt (and count the attempt)."""
        nominal = self.nominal()
        self.attempts += 1
        return nominal * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Start the schedule again from its first delay (after a successful connection)."""
        self.attempts = 0

    def options(self) -> dict[str, float]:
        """The settings (not the state): what travels to a Ray connection actor."""
        return {name: float(getattr(self, name)) for name in _SETTINGS}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Backoff:
        """A fresh Backoff from :meth:`options` (missing ones: the defaults)."""
        settings: dict[str, Any] = {name: float(options[name]) for name in _SETTINGS if name in options}
        return cls(**settings)


_SETTINGS = ("initial", "factor", "cap", "jitter")

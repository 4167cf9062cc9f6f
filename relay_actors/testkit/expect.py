"""Walking what happened, one event at a time: ``expect.next_event().is_prompt(text=...)``.

A test asserts each event in order, then ``no_more_events()``. Waiting is bounded: an
event that has not happened yet is waited for (polling the emulator's journal with a
deadline); a call that ended, or a deadline that passed, fails the assertion with what
was expected and everything the far side saw and heard, the offending event marked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .events import (
    Answered,
    Collected,
    Connected,
    Delivery,
    Detected,
    HungUp,
    Prompt,
    Recording,
    Reply,
)

__all__ = ["EventAssert", "EventSequence"]

E = TypeVar("E")
#: Polls the source: (every event so far, whether nothing more can happen).
Source = Callable[[], tuple[Sequence[Any], bool]]

_POLL_INTERVAL = 0.02


class EventSequence:
    """The events of one call or message, walked in order by a test.

    ``what``: the subject in failure messages (``call 1b2c...``); ``heard``: the heading
    of the event list (``what the caller heard and did``)."""

    def __init__(self, source: Source, *, what: str, heard: str, timeout: float) -> None:
        self._source = source
        self.what = what
        self.heard = heard
        self.timeout = timeout
        self._index = 0
        self._events: Sequence[Any] = ()
        self._done = False

    def _poll(self) -> None:
        self._events, self._done = self._source()

    def _wait(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._poll()
            if ready():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    @property
    def events(self) -> list[Any]:
        """Every event seen so far (not waiting)."""
        self._poll()
        return list(self._events)

    def wait_done(self, timeout: float | None = None) -> list[Any]:
        """Wait until nothing more can happen (the call ended; every reply has its final
        state) and return every event. Raises AssertionError on the deadline."""
        __tracebackhide__ = True
        if not self._wait(lambda: self._done, timeout):
            raise AssertionError(self.report(f"{self.what} did not end within {self._limit(timeout):g}s"))
        return list(self._events)

    def next_event(self, timeout: float | None = None) -> EventAssert:
        """The next event (waiting for it up to ``timeout`` s, default the sequence's)."""
        __tracebackhide__ = True
        index = self._index
        if not self._wait(lambda: len(self._events) > index or self._done, timeout):
            raise AssertionError(
                self.report(
                    f"expected event {index + 1}, but nothing more happened within {self._limit(timeout):g}s"
                )
            )
        if len(self._events) <= index:
            raise AssertionError(self.report(f"expected event {index + 1}, but it had ended"))
        self._index += 1
        return EventAssert(self, index, self._events[index])

    def skip_next(self, count: int = 1) -> None:
        """Step over ``count`` events, whatever they are."""
        for _ in range(count):
            self.next_event()

    def no_more_events(self, timeout: float | None = None) -> None:
        """Wait until nothing more can happen, then fail if any event is left unasserted."""
        __tracebackhide__ = True
        self.wait_done(timeout)
        if len(self._events) > self._index:
            raise AssertionError(
                self.report(
                    f"expected no more events, but event {self._index + 1} was: "
                    f"{self._events[self._index].describe()}",
                    mark=self._index,
                )
            )

    def _limit(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def report(self, problem: str, mark: int | None = None) -> str:
        """``problem``, then every event so far, numbered, ``mark`` pointed at."""
        lines = [f"{self.what}: {problem}", f"{self.heard}:"]
        for i, event in enumerate(self._events):
            lines.append(f"{'>' if i == mark else ' '} {i + 1}. {event.describe()}")
        if not self._events:
            lines.append("  (nothing)")
        if not self._done:
            lines.append("  ... (still going)")
        return "\n".join(lines)


def _matches(expected: Any, actual: Any) -> bool:
    return expected is None or expected == actual


class EventAssert:
    """One event of an :class:`EventSequence`, to assert on. Every ``is_*`` returns the
    typed event (for further checks) or raises AssertionError naming what came instead."""

    def __init__(self, sequence: EventSequence, index: int, event: Any) -> None:
        self.sequence = sequence
        self.index = index
        self.event = event

    def _check(self, kind: type[E], expected: str, ok: Callable[[E], bool]) -> E:
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if isinstance(self.event, kind) and ok(self.event):
            return self.event
        raise AssertionError(
            self.sequence.report(
                f"expected event {self.index + 1} to be {expected}, but it was: {self.event.describe()}",
                mark=self.index,
            )
        )

    @staticmethod
    def _wanted(name: str, **fields: Any) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in fields.items() if v is not None)
        return f"{name} with {given}" if given else name

    def is_answered(self) -> Answered:
        """The app answered (or the dialled number picked up)."""
        __tracebackhide__ = True
        return self._check(Answered, "answered", lambda e: True)

    def is_prompt(
        self, text: str | None = None, *, contains: str | None = None, url: str | None = None
    ) -> Prompt:
        """A prompt: its whole TTS ``text``, a part of it (``contains``), or an audio ``url``."""
        __tracebackhide__ = True
        return self._check(
            Prompt,
            self._wanted("a prompt", text=text, contains=contains, url=url),
            lambda e: (
                _matches(text, e.text)
                and (contains is None or contains in e.text)
                and (url is None or url in e.urls)
            ),
        )

    def is_collected(
        self, *, digits: str | None = None, speech: str | None = None, kind: str | None = None
    ) -> Collected:
        """Input collected: these ``digits``, this ``speech``, or a ``kind`` (``no_input``,
        ``no_match``, ``digit``, ``speech``)."""
        __tracebackhide__ = True
        want_kind = kind or ("digit" if digits is not None else "speech" if speech is not None else None)
        return self._check(
            Collected,
            self._wanted("collected input", digits=digits, speech=speech, kind=kind),
            lambda e: _matches(want_kind, e.kind) and _matches(digits, e.digits) and _matches(speech, e.text),
        )

    def is_recording(self, *, url: str | None = None) -> Recording:
        """A finished recording (with this ``url`` if given)."""
        __tracebackhide__ = True
        return self._check(
            Recording,
            self._wanted("a finished recording", url=url),
            lambda e: e.state == "finished" and bool(e.url) and _matches(url, e.url),
        )

    def is_connect(self, to: str | Sequence[str] | None = None, *, state: str = "connected") -> Connected:
        """A transfer that rang ``to`` (a number, or every number in order) and ended ``state``."""
        __tracebackhide__ = True
        targets = (to,) if isinstance(to, str) else tuple(to) if to is not None else None
        return self._check(
            Connected,
            self._wanted("a connect", to=to, state=state),
            lambda e: _matches(targets, e.to) and e.state == state,
        )

    def is_detect(self, result: str | None = None) -> Detected:
        """A detection's answer (``HUMAN``, ``MACHINE``, ``UNKNOWN``, ...)."""
        __tracebackhide__ = True
        return self._check(
            Detected, self._wanted("a detection", result=result), lambda e: _matches(result, e.result)
        )

    def is_hangup(self, *, by: str | None = None, reason: str | None = None) -> HungUp:
        """The end of the call: ``by`` ``app``, ``caller`` or ``callee``; ``reason`` as the
        service gives it (``hangup``, ``busy``, ``noAnswer``, ...)."""
        __tracebackhide__ = True
        return self._check(
            HungUp,
            self._wanted("the hang-up", by=by, reason=reason),
            lambda e: _matches(by, e.by) and _matches(reason, e.reason),
        )

    def is_reply(
        self, body: str | None = None, *, contains: str | None = None, from_: str | None = None
    ) -> Reply:
        """A reply to the sender: its whole ``body`` or a part (``contains``), sent ``from_``."""
        __tracebackhide__ = True
        return self._check(
            Reply,
            self._wanted("a reply", body=body, contains=contains, from_=from_),
            lambda e: (
                _matches(body, e.body)
                and (contains is None or contains in e.body)
                and _matches(from_, e.from_)
            ),
        )

    def is_delivery(self, state: str | None = None) -> Delivery:
        """A reply's final delivery state (``delivered``, ``undelivered``, ``failed``)."""
        __tracebackhide__ = True
        return self._check(
            Delivery, self._wanted("a delivery", state=state), lambda e: _matches(state, e.state)
        )

"""The cluster-wide call limit as a lease ledger, sans-IO.

The router holds ``max_active_calls`` (the *budget*); each connection shard
admits offers against slots it leased from the router in blocks, so the router
stays off the per-call path. Two units, plain Python, fed messages and
returning decisions:

* :class:`LeaseLedger` (router side): the budget, a grant per shard, and an
  *epoch* that fences a restarted router.
* :class:`ShardLeases` (shard side): slots granted, calls active, offers
  waiting for a slot, and when to ask for a block or give spare slots back.

Safety rests on one inequality, kept at every step: for every shard the
router's grant is at least the slots the shard may use, and the router never
grants beyond ``budget - sum(grants)``. It is kept by these rules:

* **One request at a time per shard, numbered.** A shard has at most one
  request (``sync``, ``acquire`` or ``release``) outstanding and retransmits
  it, unchanged, until a reply matches it. The router keeps, per shard, the
  ``(incarnation, seq)`` of the last request it applied and that reply: a
  retransmission (a retry after ``ActorUnavailableError``, which may or may
  not have run; a duplicate in the network) gets the same reply and is not
  applied again; an older one is ignored. So ``acquire`` and ``release`` are
  idempotent and ordered.
* **Grants move in the safe order.** The router adds a grant before the shard
  learns of it (the shard counts it only from the reply); the shard stops
  using slots before it asks to release them (the router subtracts on apply).
* **Epochs fence a restarted router.** Every request carries the router epoch
  the shard knows; a router refuses any other epoch and answers with its own.
  A shard that learns a newer epoch (a refusal, or the router asking) drops
  its outstanding request, ignores every reply of the old epoch, and reports
  its authoritative ``granted`` and ``active`` (a ``sync``); the router sets
  the shard's grant to ``max(granted, active)``.
* **"Could not ask" is "unknown", never "free".** A restarted router knows
  nothing of the grants the old one made. A shard that has not reported in
  this epoch may hold any part of the budget the others do not account for,
  so the router reserves, for each unknown shard, its last known grant or, if
  it never had one, the whole remaining budget: the router grants only from
  ``budget - sum(known grants) - sum(reserves)``, which is 0 until every
  shard has reported. Meanwhile it answers ``acquire`` with ``wait`` (not
  "none free"): the shard keeps its offers waiting and retransmits, so a
  router restart delays admission rather than dropping calls, up to the
  shard's own timeout. The router keeps asking the unknown shards; a shard
  that talks to it first learns the epoch from the refusal. (A shard's
  *process* restart is not "unknown": its old grant stays reserved until the
  new incarnation's ``sync`` replaces it.)
* **Incarnations fence a restarted shard.** A restarted shard has a higher
  incarnation number; its ``sync`` replaces its old record, and requests of
  older incarnations are ignored.
* **A slot is freed only on a confirmed end**: the call's ``ended`` event, a
  successful ``calling.end`` (or ``calling.pass``), or a 404/410 answer to one.
  A failed hang-up keeps the slot and lists the call in
  :attr:`ShardLeases.unconfirmed` for the caller to retry and persist.

* **A CallActor a restarted shard could not ask is "unknown", not empty.** A
  shard re-learns its calls from the CallActors; one whose ``owned()`` failed
  or timed out is asked again (with backoff, up to a deadline), and meanwhile
  its calls are counted without being known one by one: the shard's first
  ``sync`` asks to *inherit* its previous incarnation's grant (``inherit``),
  which covers every call that incarnation had (the safety inequality), and
  the part of it beyond the calls it knows is *held* (:attr:`ShardLeases.held`),
  neither used nor given back, until every CallActor has answered (or was
  given up and its last known calls handed to the lost-actor policy:
  :meth:`ShardLeases.learned`). A router that has no record of the earlier
  incarnation (it restarted too) cannot say what that grant was: it answers
  ``wait`` and the shard stays unknown (reserving the budget) until it can
  report in full.

What this does not cover: a call is counted after a shard restart only if a
CallActor holds it, it is a stored unconfirmed hang-up, or its CallActor could
not be asked (held). Calls of a CallActor that died while its shard was down
too, before the shard handled the loss, are not counted until they end.
``tests/admission/test_admission_model.py`` checks these rules by model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

__all__ = [
    "LEASE_BLOCK",
    "MAX_LEASE_BLOCK",
    "Action",
    "Admit",
    "Duplicate",
    "LeaseLedger",
    "LeaseReply",
    "LeaseRequest",
    "Reject",
    "Send",
    "ShardLeases",
    "lease_block",
    "prefetches",
]

#: Lease block (slots a shard asks for at once) of an ordinary budget.
LEASE_BLOCK = 64
#: Largest lease block, for budgets of many thousands: a shard must not run dry
#: while the router's answer waits behind a burst of offers in its loop (3,000 offers
#: that arrived at once held back the answer for 150 ms with blocks of 64, and the
#: CallActors idled). Spares stay under an eighth of the budget.
MAX_LEASE_BLOCK = 512

RequestKind = Literal["sync", "acquire", "release"]
ReplyKind = Literal["synced", "granted", "released", "refused", "wait"]


def lease_block(budget: int, shards: int) -> int:
    """Slots a shard asks for at once: every shard's spare slots (up to two blocks)
    stay a small part of the budget: 20 calls over 2 shards lease 2 at a time, 1,000
    calls 64, and budgets of many thousands up to :data:`MAX_LEASE_BLOCK`."""
    shards = max(1, shards)
    block = max(1, min(LEASE_BLOCK, budget // (4 * shards)))
    if block == LEASE_BLOCK:
        block = min(MAX_LEASE_BLOCK, max(LEASE_BLOCK, budget // (16 * shards)))
    return block


def prefetches(block: int) -> bool:
    """Whether shards with this block ask ahead of need: only with full blocks, i.e. a
    large budget, where the spares (under the two blocks a shard may keep anyway)
    are a small part of it; near a small limit every slot is asked for when needed."""
    return block >= LEASE_BLOCK


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """Shard → router. ``count`` is slots for ``acquire``/``release`` and the shard's
    ``granted`` for ``sync``; ``active`` (``sync`` only) is its live calls it knows;
    ``inherit`` (``sync`` only): a new incarnation that could not ask every CallActor
    for its calls keeps at least its previous incarnation's grant."""

    kind: RequestKind
    shard: int
    incarnation: int
    seq: int
    epoch: int
    count: int = 0
    active: int = 0
    inherit: bool = False


@dataclass(frozen=True, slots=True)
class LeaseReply:
    """Router → shard, answering the request ``(shard, incarnation, seq)``. ``count`` is
    the slots granted (``granted``), the shard's whole grant (``synced``), else 0;
    ``epoch`` is the router's. ``wait``: not applied, the router is still learning the
    shards' grants; retransmit the request later. ``refused``: wrong epoch or unknown
    incarnation; report (``sync``) first."""

    kind: ReplyKind
    shard: int
    incarnation: int
    seq: int
    epoch: int
    count: int = 0


@dataclass(slots=True)
class _Record:
    incarnation: int
    granted: int
    last_seq: int
    last_reply: LeaseReply


class LeaseLedger:
    """The router's side (see the module docstring).

    Args:
        budget: the cluster-wide ``max_active_calls``.
        shards: how many shards exist (numbered ``0 .. shards-1``).
        epoch: this router's epoch, higher than any earlier router's.
    """

    def __init__(self, budget: int, shards: int, epoch: int) -> None:
        self.budget = budget
        self.shards = shards
        self.epoch = epoch
        self.block = lease_block(budget, shards)
        self._records: dict[int, _Record] = {}

    # --- views ------------------------------------------------------------------------

    def unknown(self) -> list[int]:
        """Shards that have not reported in this epoch (ask them; retry until they do)."""
        return [s for s in range(self.shards) if s not in self._records]

    def grants(self) -> dict[int, int]:
        """Grants of the shards that reported (what ``active()`` shows)."""
        return {s: r.granted for s, r in self._records.items()}

    def leased(self) -> int:
        """Slots granted to the shards that reported."""
        return sum(r.granted for r in self._records.values())

    def free(self) -> int:
        """Slots that are provably free: budget - known grants - reserves of unknown shards.
        A shard unknown in this epoch was never known to this ledger (a shard's restart
        keeps its record, hence its grant, until the new incarnation reports), so it
        reserves everything left: nothing is free until every shard has reported."""
        if len(self._records) < self.shards:
            return 0
        return max(0, self.budget - sum(r.granted for r in self._records.values()))

    # --- requests -----------------------------------------------------------------------

    def handle(self, req: LeaseRequest) -> LeaseReply | None:
        """Apply one request; the reply to send back, or None for a stale message to ignore."""
        if req.epoch != self.epoch:
            return self._reply(req, "refused")
        record = self._records.get(req.shard)
        if record is not None and req.incarnation < record.incarnation:
            return None  # an earlier life of the shard: it is gone
        if record is not None and req.incarnation == record.incarnation:
            if req.seq == record.last_seq and req.kind == _KIND_OF[record.last_reply.kind]:
                return record.last_reply  # a retransmission: same answer, applied once
            if req.seq <= record.last_seq:
                return None
        if req.kind == "sync":
            if req.inherit and record is None:
                # What the earlier incarnation was granted is unknown here (this router
                # never heard from it): the shard stays unknown, its reserve kept.
                return self._reply(req, "wait")
            return self._sync(req, record.granted if record is not None and req.inherit else 0)
        if record is None or req.incarnation != record.incarnation:
            return self._reply(req, "refused")  # unknown here: it must report first
        if req.kind == "acquire":
            if self.unknown():
                # Not "none free": nothing is *provably* free until every shard reported.
                # Not applied, not remembered: the shard retransmits the same request.
                return self._reply(req, "wait")
            got = max(0, min(req.count, self.free()))
            record.granted += got
            reply = self._reply(req, "granted", got)
        else:
            record.granted -= min(max(0, req.count), record.granted)
            reply = self._reply(req, "released")
        record.last_seq, record.last_reply = req.seq, reply
        return reply

    def _sync(self, req: LeaseRequest, inherited: int = 0) -> LeaseReply:
        # Its calls exist whatever the budget says: the grant covers at least them (and
        # those of CallActors it could not ask, within the earlier incarnation's grant).
        granted = max(req.count, req.active, inherited, 0)
        reply = self._reply(req, "synced", granted)
        self._records[req.shard] = _Record(req.incarnation, granted, req.seq, reply)
        return reply

    def _reply(self, req: LeaseRequest, kind: ReplyKind, count: int = 0) -> LeaseReply:
        return LeaseReply(kind, req.shard, req.incarnation, req.seq, self.epoch, count)


_KIND_OF: dict[str, str] = {"synced": "sync", "granted": "acquire", "released": "release"}

# --- the shard side ----------------------------------------------------------------------

OfferT = TypeVar("OfferT")


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``request`` to the router (again, if it is a retransmission)."""

    request: LeaseRequest


@dataclass(frozen=True, slots=True)
class Admit(Generic[OfferT]):
    """A slot is taken for ``call_id``: place the offer."""

    call_id: str
    offer: OfferT


@dataclass(frozen=True, slots=True)
class Reject(Generic[OfferT]):
    """No slot for ``call_id``: drop or pass the offer (over the limit)."""

    call_id: str
    offer: OfferT


@dataclass(frozen=True, slots=True)
class Duplicate(Generic[OfferT]):
    """``call_id`` is already admitted or waiting: a redelivery, only acknowledge it."""

    call_id: str
    offer: OfferT


Action = Send | Admit[OfferT] | Reject[OfferT] | Duplicate[OfferT]


@dataclass
class ShardLeases(Generic[OfferT]):
    """One shard's side (see the module docstring). Every method returns the actions
    to carry out, in order.

    Args:
        shard: the shard's number.
        incarnation: higher than any earlier life of this shard.
        block: slots asked for at once; spare slots beyond two blocks go back.
        active: calls this shard holds at start (re-learned from the CallActors).
        unconfirmed: calls whose hang-up has not been confirmed (from durable storage).
        unknown: CallActors whose calls this (restarted) shard could not learn yet;
            until :meth:`learned` resolves each, the earlier incarnation's grant is
            inherited and what it does not explain is :attr:`held`.
        max_waiting: bound of the queue of offers waiting for a slot; beyond it
            offers are rejected at once.
        prefetch: ask for a block before the spare slots run out (for large
            budgets; see :func:`prefetches`).
    """

    shard: int
    incarnation: int
    block: int = LEASE_BLOCK
    active: set[str] = field(default_factory=set)
    unconfirmed: set[str] = field(default_factory=set)
    unknown: set[int] = field(default_factory=set)
    max_waiting: int = 10_000
    prefetch: bool = False
    #: Slots kept for the calls of the :attr:`unknown` CallActors (not known one by one).
    held: int = 0
    granted: int = 0
    epoch: int = 0
    synced: bool = False
    outstanding: LeaseRequest | None = None
    #: Offers waiting for a slot, by call id, oldest first.
    waiting: dict[str, OfferT] = field(default_factory=dict)
    _seq: int = 0
    #: The last acquire was granted short (the budget is spent): ask again only for
    #: offers that wait, not ahead of need, until one is granted in full.
    _short: bool = False

    def __post_init__(self) -> None:
        self.active |= self.unconfirmed
        if self.incarnation <= 1:
            self.unknown.clear()  # a first life: no earlier one placed calls anywhere
        #: Set once this incarnation knows its grant (an inherited one included).
        self._grant_known = not self.unknown

    # --- views ------------------------------------------------------------------------

    @property
    def spare(self) -> int:
        return self.granted - len(self.active) - self.held

    def state(self) -> dict[str, int]:
        """What the shard reports (``lease_state``) and shows in its stats."""
        return {
            "granted": self.granted,
            "in_use": len(self.active) + self.held,
            "held": self.held,
            "unknown_call_actors": len(self.unknown),
            "epoch": self.epoch,
            "waiting": len(self.waiting),
            "unconfirmed": len(self.unconfirmed),
        }

    # --- inputs -----------------------------------------------------------------------

    def start(self) -> list[Action[OfferT]]:
        """First contact: report (the router answers with its epoch if it differs)."""
        return self._next()

    def offer(self, call_id: str, offer: OfferT) -> list[Action[OfferT]]:
        """An inbound call (``calling.call.receive``)."""
        if call_id in self.active or call_id in self.waiting:
            return [Duplicate(call_id, offer)]
        if self.synced and not self.waiting and self.spare > 0:
            self.active.add(call_id)
            admitted: list[Action[OfferT]] = [Admit(call_id, offer)]
            return admitted + self._next() if self.prefetch else admitted
        if len(self.waiting) >= self.max_waiting:
            return [Reject(call_id, offer)]
        self.waiting[call_id] = offer
        return self._next()

    def withdraw(self, call_id: str) -> OfferT | None:
        """Take back a waiting offer (its call ended before it got a slot); None if it
        was not waiting."""
        return self.waiting.pop(call_id, None)

    def adopt(self, call_id: str) -> list[Action[OfferT]]:
        """A call that exists without an offer (a dial leg): count it; a grant short of
        the active calls is topped up from the router."""
        self.active.add(call_id)
        return self._next()

    def ended(self, call_id: str) -> list[Action[OfferT]]:
        """A confirmed end (``ended`` event, successful or 404/410 ``calling.end``, a
        successful ``calling.pass``; or an admitted offer that could not be placed)."""
        if call_id not in self.active:
            return []
        self.active.discard(call_id)
        self.unconfirmed.discard(call_id)
        return self._admit_waiting() + self._next()

    def learned(self, actor: int, calls: Iterable[str]) -> list[Action[OfferT]]:
        """CallActor ``actor`` was unknown and now answered with ``calls`` (this shard's
        calls it holds), or was given up and ``calls`` are its last known ones, handed
        to the lost-actor policy: they are counted one by one from now on, in place of
        the held slots. Once no CallActor is unknown, nothing is held."""
        if actor not in self.unknown:
            return []
        self.unknown.discard(actor)
        new = set(calls) - self.active
        self.active |= new
        self.held = max(0, self.held - len(new)) if self.unknown else 0
        req = self.outstanding
        if not self.unknown and not self.synced and req is not None and req.inherit:
            # Answered "wait" (the router knew no earlier grant): report in full instead.
            # Safe to replace: a sync changes nothing the shard relied on.
            self.outstanding = None
        if not self.unknown:
            self._grant_known = True
        return self._admit_waiting() + self._next()

    def hangup_failed(self, call_id: str) -> None:
        """A ``calling.end`` failed (timeout, connection lost): the call may be live, so its
        slot stays taken; it is listed in :attr:`unconfirmed` to retry and persist."""
        if call_id in self.active:
            self.unconfirmed.add(call_id)

    def on_reply(self, reply: LeaseReply) -> list[Action[OfferT]]:
        """The router's answer. Replies that match no outstanding request are stale."""
        req = self.outstanding
        if reply.kind == "refused":
            if reply.epoch < self.epoch or not self._answers(reply, req, epoch=False):
                return []
            self.epoch, self.synced, self.outstanding = reply.epoch, False, None
            return self._next()
        if req is None or not self._answers(reply, req, epoch=True):
            return []
        self.outstanding = None
        if reply.kind == "synced":
            self.granted, self.synced = reply.count, True
            if not self._grant_known:
                # The inherited grant beyond the calls known when asking is held for the
                # unknown CallActors' calls (calls adopted since then are new: not in it).
                self.held = max(0, reply.count - req.active) if self.unknown else 0
                self._grant_known = True
            return self._admit_waiting() + self._next()
        if reply.kind == "granted":
            self.granted += reply.count
            self._short = reply.count < req.count
            actions = self._admit_waiting()
            if self.waiting and reply.count < req.count:
                actions += self._reject_waiting()  # the budget is exhausted
            return actions + self._next()
        if reply.kind == "wait":
            self.outstanding = req  # the router is rebuilding: retransmit it later
            return []
        return self._next()  # released

    def _answers(self, reply: LeaseReply, req: LeaseRequest | None, *, epoch: bool) -> bool:
        """Does ``reply`` answer the outstanding ``req`` (in its epoch, unless a refusal)?"""
        if req is None or (reply.incarnation, reply.seq) != (self.incarnation, req.seq):
            return False
        return not epoch or reply.epoch == req.epoch

    def on_ask(self, epoch: int) -> list[Action[OfferT]]:
        """The router (restarted, epoch ``epoch``) asks for this shard's state."""
        if epoch > self.epoch:
            self.epoch, self.synced, self.outstanding = epoch, False, None
            return self._next()
        return self.retry()

    def retry(self) -> list[Action[OfferT]]:
        """Retransmit the outstanding request (its reply is overdue)."""
        return [Send(self.outstanding)] if self.outstanding is not None else []

    def timed_out(self) -> list[Action[OfferT]]:
        """The router did not answer in time: reject the waiting offers (callers must not
        ring forever); the outstanding request stays, to be retransmitted."""
        return self._reject_waiting()

    # --- decisions ----------------------------------------------------------------------

    def _admit_waiting(self) -> list[Action[OfferT]]:
        actions: list[Action[OfferT]] = []
        while self.waiting and self.synced and self.spare > 0:
            call_id = next(iter(self.waiting))
            offer = self.waiting.pop(call_id)
            self.active.add(call_id)
            actions.append(Admit(call_id, offer))
        return actions

    def _reject_waiting(self) -> list[Action[OfferT]]:
        actions: list[Action[OfferT]] = [Reject(cid, offer) for cid, offer in self.waiting.items()]
        self.waiting.clear()
        return actions

    def _next(self) -> list[Action[OfferT]]:
        """What to ask the router next, if nothing is outstanding."""
        if self.outstanding is not None:
            return []
        if not self.synced:
            inherit = not self._grant_known
            return [self._send("sync", self.granted, len(self.active), inherit)]
        want = len(self.waiting) - self.spare
        if want > 0:
            return [self._send("acquire", max(want, self.block))]
        if self.prefetch and self.spare * 2 < self.block and not self._short:
            # Ahead of need: at a burst, offers would otherwise stop at every block
            # for a round trip to the router while the CallActors sit idle.
            return [self._send("acquire", self.block)]
        if self.spare > 2 * self.block and not self.waiting:
            give_back = self.spare - self.block
            self.granted -= give_back  # stop using them before the router frees them
            return [self._send("release", give_back)]
        return []

    def _send(self, kind: RequestKind, count: int, active: int = 0, inherit: bool = False) -> Send:
        self._seq += 1
        req = LeaseRequest(kind, self.shard, self.incarnation, self._seq, self.epoch, count, active, inherit)
        self.outstanding = req
        return Send(req)

"""What actors say to each other: small tuples, tagged by their first element.

Plain tuples pickle fast and small, and these cross process boundaries by the
thousand per second, so no classes here. Every batch is a list of them, and
batches travel on the direct link between a connection actor and a CallActor
(:mod:`relay_actors.actor_link`): ``("deliver", seq, batch)`` one way, answered
by ``("delivered", seq, refused_offer_ids)``; ``("submit", batch)`` the other.

Connection actor → CallActor (applied by ``CallActor.deliver(shard, batch)``):

* ``(OFFER, call_id, params, event_id)`` — a new inbound call placed on this actor
* ``(EVENT, call_id, event_type, params, timestamp, event_id)`` — an event of one of its calls
* ``(LEG, tag, params)`` — a new leg of a dial this actor made (events follow)
* ``(DIAL, tag, answered, call_info)`` — the outcome of a dial this actor made
* ``(RESULT, req_id, ok, payload)`` — the result dict, or ``(code, message, data)`` of a RelayError
* ``(MSG_IN, params)`` — an inbound message for ``on_message``
* ``(MSG_STATE, event_type, params, timestamp)`` — a state event of a message this actor sent
* ``(LOST, call_id, reason)`` — the call cannot be reached any more (session lost)
* ``(RESTARTED,)`` — the connection actor restarted: requests in flight to it are gone
* ``(ADOPT, call_id, params)`` — a call re-homed here from a lost CallActor (events follow)

CallActor → connection actor (applied by ``ConnectionActor.submit(actor_index, batch)``):

* ``(req_id, method, params)`` — a request; its RESULT comes back through ``deliver``
"""

from __future__ import annotations

from typing import Final

#: Ray namespace of every relay-actors actor (names carry the app).
NAMESPACE: Final = "relay_actors"

OFFER: Final = "offer"
EVENT: Final = "event"
LEG: Final = "leg"
DIAL: Final = "dial"
RESULT: Final = "result"
MSG_IN: Final = "msg_in"
MSG_STATE: Final = "msg_state"
LOST: Final = "lost"
RESTARTED: Final = "restarted"
ADOPT: Final = "adopt"


def actor_name(app: str, role: str, index: int | None = None) -> str:
    """Names of the app's actors: ``relay:<app>:router``, ``relay:<app>:connection:0``, ..."""
    return f"relay:{app}:{role}" if index is None else f"relay:{app}:{role}:{index}"

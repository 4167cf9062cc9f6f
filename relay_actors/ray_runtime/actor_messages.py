"""What actors say to each other on the link: small JSON arrays, tagged by their first element.

They travel as orjson in the DATA frames of :mod:`relay_actors.ray_runtime.link_protocol`
(nothing executable crosses a socket), so each is a list of JSON values.

Connection actor → CallActor (applied by ``CallActor._apply(shard, batch)``):

* ``[OFFER, call_id, params, event_id]`` — a new inbound call placed on this actor
* ``[EVENT, call_id, event_type, params, timestamp, event_id]`` — an event of one of its calls
* ``[LEG, tag, params]`` — a new leg of a dial this actor made (events follow)
* ``[DIAL, tag, answered, call_info]`` — the outcome of a dial this actor made
* ``[RESULT, req_id, ok, payload]`` — the result dict, or ``[code, message, data]`` of a RelayError
* ``[MSG_IN, params]`` — an inbound message for ``on_message``
* ``[MSG_STATE, event_type, params, timestamp]`` — a state event of a message this actor sent
* ``[LOST, call_id, reason]`` — the call is not this actor's any more (session or actor lost)
* ``[ADOPT, call_id, params]`` — a call re-homed here from a lost CallActor (events follow)
* ``[RESUMED]`` — the RELAY session is (re)connected and every event the server had for it
  then precedes this item: commands left in doubt by a restart are resolved now
  (:mod:`relay_actors.ray_runtime.commands_in_doubt`)

CallActor → connection actor (applied by ``ConnectionActor._on_link_items(actor_index, batch)``):

* ``[REQUEST, req_id, method, params]`` — a request; its RESULT comes back the same way
* ``[REFUSED, [offer, ...]]`` — offers this actor is too full to take (placed elsewhere)
* ``[DIAL_ABANDONED, tag]`` — nobody takes this dial: forget it, hang up its late legs

A connection actor that restarted is recognised by the link's handshake (a new
incarnation): the CallActor then fails the requests it had in flight to it.
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
ADOPT: Final = "adopt"
RESUMED: Final = "resumed"
REQUEST: Final = "req"
REFUSED: Final = "refused"
DIAL_ABANDONED: Final = "dial_abandoned"

#: The item of a call's event stream (CallActor → driver, ``call_events``) that says the
#: runtime lost the call.
STREAM_LOST: Final = "relay_actors.lost"


def actor_name(app: str, role: str, index: int | None = None) -> str:
    """Names of the app's actors: ``relay:<app>:router``, ``relay:<app>:connection:0``, ..."""
    return f"relay:{app}:{role}" if index is None else f"relay:{app}:{role}:{index}"

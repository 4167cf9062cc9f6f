"""Names of the RELAY protocol: methods, event types, states, defaults.

Shared by the client core and the emulator, so both speak the same words.
"""

from __future__ import annotations

import re
from typing import Final

# --- connection -----------------------------------------------------------------
PROTOCOL_VERSION: Final = {"major": 2, "minor": 0, "revision": 0}
AGENT: Final = "relay-actors/0.1"
DEFAULT_HOST: Final = "relay.signalwire.com"

METHOD_CONNECT: Final = "signalwire.connect"
METHOD_EVENT: Final = "signalwire.event"
METHOD_PING: Final = "signalwire.ping"
METHOD_DISCONNECT: Final = "signalwire.disconnect"
METHOD_RECEIVE: Final = "signalwire.receive"
METHOD_UNRECEIVE: Final = "signalwire.unreceive"

# The official SDK's names for the same things (``signalwire.relay.constants``).
# AGENT_STRING is ours on purpose: the server sees which client it talks to.
METHOD_SIGNALWIRE_CONNECT: Final = METHOD_CONNECT
METHOD_SIGNALWIRE_EVENT: Final = METHOD_EVENT
METHOD_SIGNALWIRE_PING: Final = METHOD_PING
METHOD_SIGNALWIRE_DISCONNECT: Final = METHOD_DISCONNECT
METHOD_SIGNALWIRE_RECEIVE: Final = METHOD_RECEIVE
METHOD_SIGNALWIRE_UNRECEIVE: Final = METHOD_UNRECEIVE
AGENT_STRING: Final = AGENT
DEFAULT_RELAY_HOST: Final = DEFAULT_HOST

# Fixed defaults of the official Python SDK (reference §9.1).
REQUEST_TIMEOUT: Final = 10.0
DIAL_TIMEOUT: Final = 120.0
CLIENT_PING_INTERVAL: Final = 30.0
SERVER_PING_WATCHDOG: Final = 15.0
MAX_PING_FAILURES: Final = 3
MAX_QUEUED_REQUESTS: Final = 500
BACKOFF_MIN: Final = 1.0
BACKOFF_FACTOR: Final = 2.0
BACKOFF_MAX: Final = 30.0
MAX_AUTH_REJECTIONS: Final = 3
DEFAULT_MAX_ACTIVE_CALLS: Final = 1000
# The SDK's names of the reconnect defaults (ours are jittered: see ``Backoff``).
RECONNECT_MIN_DELAY: Final = BACKOFF_MIN
RECONNECT_MAX_DELAY: Final = BACKOFF_MAX
RECONNECT_BACKOFF_FACTOR: Final = BACKOFF_FACTOR
RECONNECT_MAX_AUTH_ATTEMPTS: Final = MAX_AUTH_REJECTIONS

# Result codes are strings; any 2xx is success (the SDKs test ^2\d\d$).
SUCCESS_CODE_RE: Final = re.compile(r"^2\d\d$")
CALL_GONE_CODES: Final = frozenset({"404", "410"})

# --- events ---------------------------------------------------------------------
EVENT_AUTHORIZATION_STATE: Final = "signalwire.authorization.state"
EVENT_CALL_RECEIVE: Final = "calling.call.receive"
EVENT_CALL_STATE: Final = "calling.call.state"
EVENT_CALL_DIAL: Final = "calling.call.dial"
EVENT_CALL_CONNECT: Final = "calling.call.connect"
EVENT_CALL_PLAY: Final = "calling.call.play"
EVENT_CALL_RECORD: Final = "calling.call.record"
EVENT_CALL_COLLECT: Final = "calling.call.collect"
EVENT_CALL_DETECT: Final = "calling.call.detect"
EVENT_CALL_FAX: Final = "calling.call.fax"
EVENT_CALL_TAP: Final = "calling.call.tap"
EVENT_CALL_STREAM: Final = "calling.call.stream"
EVENT_CALL_PAY: Final = "calling.call.pay"
EVENT_CALL_TRANSCRIBE: Final = "calling.call.transcribe"
EVENT_CALL_SEND_DIGITS: Final = "calling.call.send_digits"
EVENT_CALL_QUEUE: Final = "calling.call.queue"
EVENT_CALL_AI: Final = "calling.call.ai"
EVENT_CALL_REFER: Final = "calling.call.refer"
EVENT_CALL_DENOISE: Final = "calling.call.denoise"
EVENT_CALL_HOLD: Final = "calling.call.hold"
EVENT_CALL_ECHO: Final = "calling.call.echo"
EVENT_CONFERENCE: Final = "calling.conference"
EVENT_CALLING_ERROR: Final = "calling.error"
EVENT_MESSAGING_RECEIVE: Final = "messaging.receive"
EVENT_MESSAGING_STATE: Final = "messaging.state"

#: Every event type of the reference (§3.1). Anything else is counted as unknown.
EVENT_TYPES: Final = frozenset(
    {
        EVENT_AUTHORIZATION_STATE,
        EVENT_CALL_RECEIVE,
        EVENT_CALL_STATE,
        EVENT_CALL_DIAL,
        EVENT_CALL_CONNECT,
        EVENT_CALL_PLAY,
        EVENT_CALL_RECORD,
        EVENT_CALL_COLLECT,
        EVENT_CALL_DETECT,
        EVENT_CALL_FAX,
        EVENT_CALL_TAP,
        EVENT_CALL_STREAM,
        EVENT_CALL_PAY,
        EVENT_CALL_TRANSCRIBE,
        EVENT_CALL_SEND_DIGITS,
        EVENT_CALL_QUEUE,
        EVENT_CALL_AI,
        EVENT_CALL_REFER,
        EVENT_CALL_DENOISE,
        EVENT_CALL_HOLD,
        EVENT_CALL_ECHO,
        EVENT_CONFERENCE,
        EVENT_CALLING_ERROR,
        EVENT_MESSAGING_RECEIVE,
        EVENT_MESSAGING_STATE,
    }
)

# --- call states ----------------------------------------------------------------
CALL_STATE_CREATED: Final = "created"
CALL_STATE_RINGING: Final = "ringing"
CALL_STATE_ANSWERED: Final = "answered"
CALL_STATE_ENDING: Final = "ending"
CALL_STATE_ENDED: Final = "ended"
CALL_STATES: Final = (
    CALL_STATE_CREATED,
    CALL_STATE_RINGING,
    CALL_STATE_ANSWERED,
    CALL_STATE_ENDING,
    CALL_STATE_ENDED,
)

END_REASON_HANGUP: Final = "hangup"
END_REASON_CANCEL: Final = "cancel"
END_REASON_BUSY: Final = "busy"
END_REASON_NO_ANSWER: Final = "noAnswer"
END_REASON_DECLINE: Final = "decline"
END_REASON_ERROR: Final = "error"
END_REASON_ABANDONED: Final = "abandoned"
END_REASON_MAX_DURATION: Final = "max_duration"
END_REASON_NOT_FOUND: Final = "not_found"
END_REASONS: Final = frozenset(
    {
        END_REASON_HANGUP,
        END_REASON_CANCEL,
        END_REASON_BUSY,
        END_REASON_NO_ANSWER,
        END_REASON_DECLINE,
        END_REASON_ERROR,
        END_REASON_ABANDONED,
        END_REASON_MAX_DURATION,
        END_REASON_NOT_FOUND,
    }
)

CONNECT_STATE_CONNECTING: Final = "connecting"
CONNECT_STATE_CONNECTED: Final = "connected"
CONNECT_STATE_DISCONNECTED: Final = "disconnected"
CONNECT_STATE_FAILED: Final = "failed"

DIAL_STATE_DIALING: Final = "dialing"
DIAL_STATE_ANSWERED: Final = "answered"
DIAL_STATE_FAILED: Final = "failed"

# --- action states and types (the official SDK's names) ----------------------------
PLAY_STATE_PLAYING: Final = "playing"
PLAY_STATE_PAUSED: Final = "paused"
PLAY_STATE_FINISHED: Final = "finished"
PLAY_STATE_ERROR: Final = "error"

RECORD_STATE_RECORDING: Final = "recording"
RECORD_STATE_PAUSED: Final = "paused"
RECORD_STATE_FINISHED: Final = "finished"
RECORD_STATE_NO_INPUT: Final = "no_input"

DETECT_TYPE_MACHINE: Final = "machine"
DETECT_TYPE_FAX: Final = "fax"
DETECT_TYPE_DIGIT: Final = "digit"

ROOM_STATE_JOINING: Final = "joining"
ROOM_STATE_JOIN: Final = "join"
ROOM_STATE_LEAVING: Final = "leaving"
ROOM_STATE_LEAVE: Final = "leave"

# --- messaging ------------------------------------------------------------------
MESSAGE_STATE_QUEUED: Final = "queued"
MESSAGE_STATE_INITIATED: Final = "initiated"
MESSAGE_STATE_SENT: Final = "sent"
MESSAGE_STATE_DELIVERED: Final = "delivered"
MESSAGE_STATE_UNDELIVERED: Final = "undelivered"
MESSAGE_STATE_FAILED: Final = "failed"
MESSAGE_STATE_RECEIVED: Final = "received"
MESSAGE_TERMINAL_STATES: Final = frozenset(
    {MESSAGE_STATE_DELIVERED, MESSAGE_STATE_UNDELIVERED, MESSAGE_STATE_FAILED}
)

"""relay-actors: SignalWire RELAY call control on a Ray cluster."""

from .action import (
    Action,
    AIAction,
    CollectAction,
    DetectAction,
    FaxAction,
    PayAction,
    PlayAction,
    RecordAction,
    StandaloneCollectAction,
    StreamAction,
    TapAction,
    TranscribeAction,
)
from .backoff import Backoff
from .call import Call
from .client import RelayClient
from .errors import ArgumentError, AuthenticationError, ConfigError, ProtocolError, RelayError
from .message import Message
from .protocol.events import RelayEvent, parse_event

__version__ = "0.1.0"

__all__ = [
    "AIAction",
    "Action",
    "ArgumentError",
    "AuthenticationError",
    "Backoff",
    "Call",
    "CollectAction",
    "ConfigError",
    "DetectAction",
    "FaxAction",
    "Message",
    "PayAction",
    "PlayAction",
    "ProtocolError",
    "RecordAction",
    "RelayClient",
    "RelayError",
    "RelayEvent",
    "StandaloneCollectAction",
    "StreamAction",
    "TapAction",
    "TranscribeAction",
    "__version__",
    "parse_event",
]

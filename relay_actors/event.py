"""The typed events under the official SDK's module name: ``signalwire.relay.event``
becomes ``relay_actors.event`` (same classes, fields and ``parse_event``; see ``protocol/events.py``)."""

from .protocol.events import *  # noqa: F403
from .protocol.events import __all__ as __all__

"""The RELAY constants under the official SDK's module name: ``signalwire.relay.constants``
becomes ``relay_actors.constants`` (same names, same values; see ``protocol/constants.py``)."""

from .protocol.constants import *  # noqa: F403

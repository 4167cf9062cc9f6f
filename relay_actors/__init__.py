"""relay-actors: SignalWire RELAY call control on a Ray cluster."""

from .errors import ConfigError, ProtocolError, RelayError

__version__ = "0.1.0"

__all__ = ["ConfigError", "ProtocolError", "RelayError", "__version__"]

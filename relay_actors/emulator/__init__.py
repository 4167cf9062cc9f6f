"""A faithful RELAY (SignalWire) server emulator: WebSocket endpoint plus an HTTP control API.

``Emulator`` runs it in-process; ``EmulatorProcess`` runs it as a subprocess.
"""

from .config import EmulatorConfig
from .core import EmulatorCore
from .emulator import Emulator
from .process import EmulatorProcess

__all__ = ["Emulator", "EmulatorConfig", "EmulatorCore", "EmulatorProcess"]

"""The call-control verbs, one module per family; :class:`~relay_actors.call.Call` has them all.

Each family is a class over :class:`~relay_actors.call_base.CallBase` (state, waiters,
delivery, command plumbing), so the core of a call reads on its own and each family
reads as the wire methods it sends.
"""

from .ai import AIVerbs
from .bridging import BridgingVerbs
from .collect import CollectVerbs
from .detect import DetectVerbs
from .features import FeatureVerbs
from .play import PlayVerbs
from .record import RecordVerbs
from .rooms import RoomVerbs
from .services import ServiceVerbs

__all__ = [
    "AIVerbs",
    "BridgingVerbs",
    "CollectVerbs",
    "DetectVerbs",
    "FeatureVerbs",
    "PlayVerbs",
    "RecordVerbs",
    "RoomVerbs",
    "ServiceVerbs",
]

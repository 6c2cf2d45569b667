"""wslab: background WebSocket servers, transcripts and frame traces for notebooks.

>>> import wslab
>>> server = await wslab.start(echo)        # doctest: +SKIP
"""

from . import frames  # chapter 01: frames and the handshake by hand
from .errors import LegacyHandlerError, NoEventLoopError, PortInUseError
from .servers import BackgroundServer, running, start, stop_all
from .threaded import ThreadedServer, start_in_thread
from .trace import FrameTrace, trace_frames
from .transcript import Transcript

__all__ = [
    "BackgroundServer",
    "FrameTrace",
    "LegacyHandlerError",
    "NoEventLoopError",
    "PortInUseError",
    "ThreadedServer",
    "Transcript",
    "frames",
    "running",
    "start",
    "start_in_thread",
    "stop_all",
    "trace_frames",
]

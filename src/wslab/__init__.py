"""wslab: background WebSocket servers, transcripts and frame traces for notebooks.

>>> import wslab
>>> server = await wslab.start(echo)        # doctest: +SKIP
"""

from . import chat, check, faults, frames, services  # chat: 05; check: exercises; faults: real failures; frames: 01; services: redis, nginx
from .errors import LegacyHandlerError, NoEventLoopError, PortInUseError
from .fanout import Outbox  # chapter 02: per-client outboxes for fan-out
from .http import HttpAnswer, NoHttpAnswer, http_get  # plain HTTP beside WebSockets (chapters 02, 05)
from .guards import RateLimit, RepeatedHeader, header, rate_limited, request_token, token_auth  # chapter 04: who may connect
from .messages import MessageError, parse_message  # chapter 02: JSON message validation
from .servers import BackgroundServer, NameTakenError, running, start, stop_all
from .threaded import ThreadedServer, start_in_thread
from .trace import FrameTrace, trace_frames
from .transcript import Transcript

__all__ = [
    "BackgroundServer",
    "FrameTrace",
    "HttpAnswer",
    "LegacyHandlerError",
    "MessageError",
    "NameTakenError",
    "NoEventLoopError",
    "NoHttpAnswer",
    "Outbox",
    "PortInUseError",
    "RateLimit",
    "RepeatedHeader",
    "ThreadedServer",
    "Transcript",
    "check",
    "chat",
    "faults",
    "frames",
    "header",
    "http_get",
    "parse_message",
    "rate_limited",
    "request_token",
    "running",
    "services",
    "start",
    "start_in_thread",
    "stop_all",
    "token_auth",
    "trace_frames",
]

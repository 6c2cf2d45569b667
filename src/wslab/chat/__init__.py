"""The chat service of chapter 05: a server with rooms and a browser page, and a small Python client."""

from .client import ChatClient
from .protocol import CLIENT_TYPES, LIMITS, VERSION, ChatError, checked_text, describe, encode, nick_key, parse_client
from .server import TOKEN_PARAM, WS_PATH, ChatServer, Client, page

__all__ = [
    "CLIENT_TYPES",
    "LIMITS",
    "TOKEN_PARAM",
    "VERSION",
    "WS_PATH",
    "ChatClient",
    "ChatError",
    "ChatServer",
    "Client",
    "checked_text",
    "describe",
    "encode",
    "nick_key",
    "page",
    "parse_client",
]

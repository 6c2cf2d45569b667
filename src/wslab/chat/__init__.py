"""The chat service of chapter 05: a server with rooms and a browser page, and a small Python client."""

from .client import ChatClient
from .protocol import CLIENT_TYPES, LIMITS, VERSION, ChatError, describe, encode, parse_client
from .server import WS_PATH, ChatServer, Client, page

__all__ = ["CLIENT_TYPES", "LIMITS", "VERSION", "WS_PATH", "ChatClient", "ChatError", "ChatServer", "Client", "describe", "encode", "page", "parse_client"]

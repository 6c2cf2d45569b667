"""Errors a learner can meet, each with a message that says what to do next."""

from __future__ import annotations

import inspect
from typing import Any, Callable

__all__ = ["LegacyHandlerError", "NoEventLoopError", "PortInUseError", "check_handler"]


class LegacyHandlerError(TypeError):
    """The handler has the pre-websockets-14 signature ``handler(websocket, path)``."""


class PortInUseError(OSError):
    """A fixed port is already taken by another server."""


class NoEventLoopError(RuntimeError):
    """An async wslab call was made where no event loop runs."""


def check_handler(handler: Callable[..., Any]) -> None:
    """Reject handlers that websockets 17 cannot call with one connection argument.

    >>> async def echo(websocket, path): ...
    >>> check_handler(echo)
    Traceback (most recent call last):
    ...
    wslab.errors.LegacyHandlerError: ...
    """
    name = getattr(handler, "__name__", type(handler).__name__)
    if not callable(handler):
        raise TypeError(f"the handler must be an async function, got {handler!r}")
    target = handler.__call__ if not inspect.isroutine(handler) and not inspect.isclass(handler) else handler
    if not inspect.iscoroutinefunction(target):
        raise TypeError(
            f"{name} is not an async function: define it with `async def {name}(websocket):` "
            "so that it can await messages"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # builtins and exotic callables: let websockets decide
        return
    required = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) >= 2:
        params = ", ".join(p.name for p in required)
        raise LegacyHandlerError(
            f"{name}({params}) has the old two-argument signature. Since websockets 14 the handler "
            f"receives one argument, the connection: write `async def {name}({required[0].name}):` "
            f"and read the path from `{required[0].name}.request.path`."
        )
    accepts_one = required or any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        for p in signature.parameters.values()
    )
    if not accepts_one:
        raise TypeError(f"{name}() takes no arguments: write `async def {name}(websocket):`")

"""Chapter 02's ChatServer, as the chapter builds it in three cells and as the teacher's copy has it in one.

The chapter's cells are run for real: the class keeps the "say" type check it teaches, the teacher's copy is the
same code, and the chapter's exercise checks pass the saved solutions and refuse the unchanged class.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from websockets.asyncio.client import connect

import wslab
from wslab import check

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "notebooks" / "02-server.ipynb"
SOLUTIONS = ROOT / "solutions" / "02-solutions.ipynb"
CHAT_NAMES = {"ChatServer", "handler", "on_message", "publish"}


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def _setup_source(path: Path) -> str:
    """The notebook's first code cell, its imports, without IPython magics."""
    return "\n".join(line for line in _code_cells(path)[0].source.splitlines() if not line.startswith("%"))


def _parse(source: str) -> ast.Module:
    """A cell as a syntax tree: IPython magics left out, top-level ``await`` allowed."""
    code = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
    tree = compile(code, "<cell>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert isinstance(tree, ast.Module)
    return tree


def _defines(source: str) -> set[str]:
    return {node.name for node in _parse(source).body if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}


def chapter_chat_cells() -> list[str]:
    """The cells that write ChatServer: the class, then the methods added to it."""
    return [cell.source for cell in _code_cells(CHAPTER) if _defines(cell.source) & CHAT_NAMES and "ChatServer" in cell.source]


def run_cells(path: Path, sources: list[str]) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(_setup_source(path), str(path), "exec"), namespace)
    for source in sources:
        exec(compile(source, str(path), "exec"), namespace)
    return namespace


def methods(sources: list[str]) -> dict[str, str]:
    """Every function of ChatServer, by name, as normalised source (comments and layout do not count)."""
    found: dict[str, str] = {}
    for source in sources:
        for node in _parse(source).body:
            if isinstance(node, ast.ClassDef) and node.name == "ChatServer":
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        found[item.name] = ast.unparse(item)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in CHAT_NAMES:
                found[node.name] = ast.unparse(node)
    return found


def solution_cells() -> list[str]:
    return [cell.source for cell in _code_cells(SOLUTIONS)[1:] if "await " not in cell.source.splitlines()[0]]


def test_the_chapter_writes_chatserver_in_several_cells() -> None:
    cells = chapter_chat_cells()
    assert len(cells) >= 3
    assert all(len(source.splitlines()) <= 30 for source in cells), "one idea per cell: split the class"


def test_the_teachers_copy_is_the_chapters_class() -> None:
    solution = [source for source in solution_cells() if source.lstrip().startswith("class ChatServer")]
    assert len(solution) == 1
    assert methods(solution) == methods(chapter_chat_cells())


async def test_the_chapters_chatserver_keeps_the_say_check() -> None:
    namespace = run_cells(CHAPTER, chapter_chat_cells())
    app = namespace["ChatServer"]()
    async with wslab.start(app.handler, name="ch02-test-chat", process_request=app.process_request) as server:
        async with connect(server.uri + "/room/lobby") as ws:
            await ws.send(json.dumps({"type": "dance", "text": "hi"}))
            assert json.loads(await ws.recv()) == {"type": "error", "error": "unknown type 'dance'; this server understands 'say'"}
            await ws.send(json.dumps({"type": "say", "text": "hi"}))
            assert json.loads(await ws.recv()) == {"type": "said", "room": "lobby", "text": "hi"}
        await server.settle()
    assert not any("failed" in line for line in server.transcript.lines)


@pytest.mark.parametrize(
    ("exercise", "cls"),
    [(check.names, "NamedChatServer"), (check.rooms_endpoint, "RoomsChatServer"), (check.announcements, "AnnouncingChatServer")],
)
async def test_each_saved_solution_passes_and_the_chapters_class_does_not(exercise: Any, cls: str, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = run_cells(SOLUTIONS, solution_cells())
    assert (await exercise(namespace[cls])).passed, capsys.readouterr().out
    assert not (await exercise(namespace["ChatServer"])).passed, capsys.readouterr().out

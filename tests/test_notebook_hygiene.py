"""Committed notebooks were saved from one clean run and carry nothing machine-specific."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted(
    p for folder in ("notebooks", "solutions") for p in (ROOT / folder).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
)
SKIPPED = {"nbval-skip", "exercise", "skip-execution"}
MACHINE_PATH = re.compile(r"/(?:root|home/[^/\s]+|Users/[^/\s]+|tmp|work|private/var)/|site-packages|\.pyenv/|\.?venv/")
WARNING = re.compile(r"\b\w*Warning\b")


def output_text(output: dict) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    if output["output_type"] == "error":
        return "\n".join(output["traceback"])
    return "".join("".join(v) if isinstance(v, list) else str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))


def problems_in(notebook: dict) -> list[str]:
    """Everything that shows the notebook was not saved from one clean Restart & Run All."""
    problems = []
    expected = 1
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & SKIPPED:
            if cell.get("execution_count") is not None or cell.get("outputs"):
                problems.append(f"cell {index}: a skipped cell was executed; clear it")
            continue
        if cell.get("execution_count") != expected:
            problems.append(f"cell {index}: execution count {cell.get('execution_count')}, expected {expected}")
        expected += 1
        for output in cell.get("outputs", []):
            text = output_text(output)
            if output["output_type"] == "error" and "raises-exception" not in tags:
                problems.append(f"cell {index}: untagged error {output['ename']}")
            if output["output_type"] == "stream" and output["name"] == "stderr" and WARNING.search(text):
                problems.append(f"cell {index}: a warning on stderr")
            if MACHINE_PATH.search(text):
                problems.append(f"cell {index}: a machine path in the output: {MACHINE_PATH.search(text).group(0)!r}")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_notebook_was_saved_from_one_clean_run(path: Path) -> None:
    assert problems_in(json.loads(path.read_text(encoding="utf-8"))) == []


def test_there_are_notebooks() -> None:
    assert any(p.name.startswith("00-") for p in NOTEBOOKS)


def cell(source: str, count: int | None, outputs: list[dict] | None = None, tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "source": source, "execution_count": count, "outputs": outputs or [], "metadata": {"tags": tags or []}}


@pytest.mark.parametrize(
    ("cells", "complaint"),
    [
        ([cell("a", 1), cell("b", 3)], "execution count 3, expected 2"),
        ([cell("a", 2)], "execution count 2, expected 1"),
        ([cell("a", None)], "execution count None"),
        ([cell("a", 1, [{"output_type": "error", "ename": "ValueError", "evalue": "", "traceback": []}])], "untagged error"),
        ([cell("a", 1, [{"output_type": "stream", "name": "stderr", "text": "x: DeprecationWarning: y"}])], "warning on stderr"),
        ([cell("a", 1, [{"output_type": "stream", "name": "stdout", "text": "/home/ada/x.py"}])], "machine path"),
        ([cell("a", 1, [{"output_type": "execute_result", "data": {"text/plain": "'/tmp/ipykernel_1/2.py'"}}])], "machine path"),
        ([cell("a", 1, tags=["exercise", "nbval-skip"])], "skipped cell was executed"),
    ],
)
def test_the_check_catches(cells: list[dict], complaint: str) -> None:
    problems = problems_in({"cells": cells})
    assert any(complaint in p for p in problems), problems


def test_the_check_accepts_a_clean_notebook() -> None:
    good = [
        cell("a", 1, [{"output_type": "stream", "name": "stdout", "text": "ws://127.0.0.1:PORT"}]),
        cell("raise ValueError", 2, [{"output_type": "error", "ename": "ValueError", "evalue": "", "traceback": []}], ["raises-exception"]),
        cell("# todo", None, tags=["exercise", "nbval-skip"]),
        cell("b", 3),
    ]
    assert problems_in({"cells": good}) == []

"""The classroom kit (tools/course.py): generated files match their source, and the learners' release leaks nothing."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

import wslab
from wslab import check

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import course  # noqa: E402  (tools/ is not a package)

sys.path.remove(str(ROOT / "tools"))

CHAPTERS = course.chapters(ROOT)


def test_every_generated_file_matches_its_exercise_file() -> None:
    """Edit course/exercises/NN-name.toml, then `python tools/course.py build` and run the solutions notebook."""
    assert course.stale(ROOT) == []


def test_a_changed_exercise_file_makes_its_outputs_stale(tmp_path: Path) -> None:
    for folder in ("course", "notebooks", "solutions"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    source = tmp_path / "course" / "exercises" / "00-start-here.toml"
    text = source.read_text(encoding="utf-8")
    source.write_text(text.replace("message.upper()", "message.swapcase()", 1), encoding="utf-8")
    solution_changed = ["solutions/00-solutions.ipynb: its cells (build, then run it again)", "course/source/00-start-here/00-start-here.ipynb"]
    assert course.stale(tmp_path) == solution_changed  # the chapter's stub shows no region: it stays
    source.write_text(text.replace("in capital letters", "in CAPITALS", 1), encoding="utf-8")
    assert course.stale(tmp_path) == ["notebooks/00-start-here.ipynb: its exercise cells", *solution_changed[1:]]
    assert course.stale(tmp_path, write=True) != [] and course.stale(tmp_path) == []
    notebook = nbformat.read(tmp_path / "notebooks" / "00-start-here.ipynb", as_version=4)
    assert sum("in CAPITALS" in c.source for c in notebook.cells) == 1
    assert len(notebook.cells) == len(nbformat.read(ROOT / "notebooks" / "00-start-here.ipynb", as_version=4).cells)


def test_the_three_forms_of_a_solution() -> None:
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nf(1)"
    assert course.solved(source) == "def f(x):\n    return x + 1\n\nf(1)"
    assert course.stub(source) == "def f(x):\n    ...\n\nf(1)"
    assert course.region_lines(source) == ["    return x + 1"]
    for broken in ("def f(x):\n    return x", "### BEGIN SOLUTION\nx = 1", "### END SOLUTION\n### BEGIN SOLUTION"):
        with pytest.raises(ValueError, match="solution"):
            course.solved(broken)


def test_every_chapter_has_exercises_a_check_for_each_and_a_questionnaire() -> None:
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert [c.stem for c in CHAPTERS] == notebooks  # every chapter is in the kit, a new one too
    assert sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb")) == [f"{c.number}-solutions" for c in CHAPTERS]
    for chapter in CHAPTERS:
        assert 6 <= len(chapter.questions) <= 10, chapter.stem
        assert len(chapter.exercises) >= 2, chapter.stem
        for e in chapter.exercises:
            assert e.check_name in check.__all__, f"{chapter.stem}: {e.check}"
            assert course.region_lines(e.solution), f"{chapter.stem} exercise {e.number} has no solution region"
        assert 1 <= chapter.wrong[0] <= len(chapter.exercises)


def test_the_questionnaire_answers_stay_in_the_teachers_material() -> None:
    for chapter in CHAPTERS:
        cells = nbformat.read(ROOT / "notebooks" / f"{chapter.stem}.ipynb", as_version=4).cells
        chapter_text = "\n".join(c.source for c in cells)
        solutions_text = (ROOT / "solutions" / f"{chapter.number}-solutions.ipynb").read_text(encoding="utf-8")
        for question, answer in chapter.questions:
            assert " ".join(answer.split()) not in " ".join(chapter_text.split()), f"{chapter.stem}: an answer is in the chapter"
            assert " ".join(question.split()) in " ".join(chapter_text.split()), f"{chapter.stem}: a question is missing"
        assert "Questionnaire: answers" in solutions_text


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return course.release(tmp_path_factory.mktemp("release") / "wslab-learners", ROOT)


def test_the_release_has_the_chapters_and_no_teachers_material(release: Path) -> None:
    assert {p.name for p in (release / "notebooks").glob("*.ipynb")} == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert (release / "src" / "wslab" / "check" / "__init__.py").exists()
    for teachers in ("solutions", "course", "tools", "TEACHING.md", "tests/test_check.py", "tests/test_course.py"):
        assert not (release / teachers).exists(), teachers
    assert not list(release.rglob("*solutions*"))


def test_the_release_has_no_dangling_reference(release: Path) -> None:
    """What a chapter or the README names (`tests/...`, `bench/`, a link) is in the release."""
    texts = {p: p.read_text(encoding="utf-8") for p in [release / "README.md", *sorted((release / "notebooks").glob("*.ipynb"))]}
    for path, text in texts.items():
        for name in course.CITED.findall(text):
            assert (release / name.rstrip("/")).exists(), f"{path.name} cites {name}"
        for target in course.LINK.findall(text):
            if not re.match(r"[a-z]+:", target):
                assert (path.parent / target).resolve().exists(), f"{path.name} links to {target}"
        assert "TEACHING.md" not in text and "solutions/" not in text, path.name
    readme = (release / "README.md").read_text(encoding="utf-8")
    assert "## Chapters" in readme and "## Start" in readme and "For teachers" not in readme
    pyproject = tomllib.loads((release / "pyproject.toml").read_text(encoding="utf-8"))
    testpaths = pyproject["tool"]["pytest"]["ini_options"]["testpaths"]
    assert "solutions" not in testpaths and all((release / p).is_dir() for p in testpaths)


def test_no_solution_line_in_the_release(release: Path) -> None:
    files = [p for p in release.rglob("*") if p.is_file() and p.suffix in {".ipynb", ".py", ".md", ".txt", ".toml"}]
    assert len(course.solution_lines(ROOT)) > 50  # the check has something to look for
    assert course.leaks(files, ROOT) == []
    for path in (release / "notebooks").glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if "exercise" in cell.metadata.get("tags", []):
                assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_the_leak_check_catches_a_solution_and_its_near_copies(chapter: course.Chapter, tmp_path: Path) -> None:
    """Pasted as is, respaced, recommented, or with a name changed: each is found."""
    exercise = max(chapter.exercises, key=lambda e: len(course.region_lines(e.solution)))
    solution = course.solved(exercise.solution)
    line = max((l for l in course.region_lines(exercise.solution) if course._normal(l) in course.solution_lines(ROOT)), key=len)
    variants = {
        "as is": solution,
        "respaced": solution.replace(line, "  ".join(line.split()) + "   # mine"),
        "renamed": line.replace(line.split()[-1], line.split()[-1][:-1] + "Z"),
    }
    for how, text in variants.items():
        leaky = tmp_path / f"{how.replace(' ', '-')}.ipynb"
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(text)]
        nbformat.write(notebook, leaky)
        assert course.leaks([leaky], ROOT), f"{chapter.stem}, {how}: {text}"


def test_the_chapters_show_stubs_only() -> None:
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert course.leaks(paths, ROOT) == []


async def test_another_process_on_the_machine_reaches_a_loopback_server() -> None:
    """TEACHING.md's warning for hubs that share one loopback: 127.0.0.1 keeps out other machines, not other users."""
    async def echo(websocket):  # type: ignore[no-untyped-def]
        async for message in websocket:
            await websocket.send(message)

    async with wslab.start(echo, name="loopback") as server:
        client = (
            "import sys; from websockets.sync.client import connect\n"
            "with connect(sys.argv[1], proxy=None) as ws:\n    ws.send('from a classmate'); print(ws.recv())"
        )
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", client, server.uri], capture_output=True, text=True, timeout=30
        )
    assert done.stdout.strip() == "from a classmate", done.stderr


def test_every_solution_client_reaches_this_machine_whatever_the_proxy_variables() -> None:
    # on a hub that sets http_proxy, `python -m pytest solutions` (TEACHING) must still PASS
    calls = [
        (chapter.stem, line.strip())
        for chapter in CHAPTERS
        for e in chapter.exercises
        for line in (e.solution + e.hidden + e.after_code).splitlines() + chapter.wrong[1].splitlines()
        if re.search(r"\bconnect\(", line)
    ]
    assert len(calls) >= 6
    assert [call for call in calls if "proxy=None" not in call[1]] == []

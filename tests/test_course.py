"""The nbgrader course for real: release every chapter's exercises, then autograde three submissions per chapter.

In a temporary copy of ``course/`` (one per chapter, so that chapters are graded side by side), ``nbgrader
generate_assignment`` releases the notebook; then ``nbgrader autograde`` grades the solutions (full marks), the
released stubs as they are (0) and one wrong solution (every point but that exercise's). nbgrader is the
teacher's extra (requirements-teacher.txt): without it the test is skipped on a learner's machine, and fails in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import course  # noqa: E402  (tools/ is not a package)

sys.path.remove(str(ROOT / "tools"))

if os.environ.get("CI"):
    import nbgrader  # noqa: F401  (CI installs requirements-teacher.txt: the course is graded there)
else:
    pytest.importorskip("nbgrader", reason="the teacher's extra: pip install -r requirements-teacher.txt")

from nbgrader.api import Gradebook  # noqa: E402

pytestmark = pytest.mark.timeout(150)  # whichever test comes first pays for the fixture: every chapter graded

CHAPTERS = course.chapters(ROOT)
STUDENTS = ("solved", "stub", "wrong")


def nbgrader(folder: Path, *args: str) -> None:
    """One nbgrader command in a course folder, with this interpreter's tools (alembic) on the PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for attempt in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "nbgrader", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=120
        )
        # jupyter_client picks a kernel's TCP ports free, then the kernel binds them: with graders side by side a
        # port can be taken in between ("Address already in use", the kernel dies). Only that is tried again.
        if done.returncode == 0 or "Address already in use" not in done.stderr or attempt:
            break
    assert done.returncode == 0, done.stdout + done.stderr


def submission(released: nbformat.NotebookNode, chapter: course.Chapter, student: str) -> nbformat.NotebookNode:
    """The released notebook as one student hands it in: solved, untouched, or solved but one exercise wrong."""
    notebook = nbformat.from_dict(released)
    wrong_number, wrong_code = chapter.wrong
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if student == "stub" or not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        number = int(grade_id.removeprefix("exercise-"))
        cell.source = wrong_code if student == "wrong" and number == wrong_number else course.solved(chapter.exercises[number - 1].solution)
    return notebook


def grade(chapter: course.Chapter, base: Path) -> dict[str, tuple[float, float]]:
    """Release, submit and autograde one chapter in a course folder of its own; (score, max) per student."""
    folder = base / chapter.stem
    (folder / "source").mkdir(parents=True)
    shutil.copy2(ROOT / "course" / "nbgrader_config.py", folder)
    shutil.copytree(ROOT / "course" / "source" / chapter.stem, folder / "source" / chapter.stem)
    nbgrader(folder, "generate_assignment", chapter.stem, "--force")
    name = f"{chapter.stem}.ipynb"
    released = nbformat.read(folder / "release" / chapter.stem / name, as_version=4)
    for student in STUDENTS:
        target = folder / "submitted" / student / chapter.stem / name
        target.parent.mkdir(parents=True)
        nbformat.write(submission(released, chapter, student), target)
    nbgrader(folder, "autograde", chapter.stem, "--force")
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
        return {
            student: (gradebook.find_submission(chapter.stem, student).score, gradebook.find_submission(chapter.stem, student).max_score)
            for student in STUDENTS
        }


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, tuple[float, float]]]]:
    base = tmp_path_factory.mktemp("course")
    with ThreadPoolExecutor(max_workers=3) as pool:  # each chapter's kernels mostly wait on sockets
        scores = dict(zip([c.stem for c in CHAPTERS], pool.map(lambda c: grade(c, base), CHAPTERS), strict=True))
    return base, scores


def test_solutions_get_full_marks_stubs_none_and_a_wrong_answer_loses_its_points(graded) -> None:  # type: ignore[no-untyped-def]
    _, scores = graded
    expected, got = {}, {}
    for chapter in CHAPTERS:
        total = sum(e.points for e in chapter.exercises)
        lost = chapter.exercises[chapter.wrong[0] - 1].points
        expected[chapter.stem] = {"solved": (total, total), "stub": (0, total), "wrong": (total - lost, total)}
        got[chapter.stem] = scores[chapter.stem]
    assert got == expected
    assert all(0 < s["wrong"][0] < s["wrong"][1] for s in got.values())  # partial, never all or nothing


def test_no_solution_line_in_any_released_notebook(graded) -> None:  # type: ignore[no-untyped-def]
    base, _ = graded
    released = sorted(base.glob("*/release/*/*.ipynb"))
    assert [p.stem for p in released] == [c.stem for c in CHAPTERS]
    assert len(course.solution_lines(ROOT)) > 50  # the line check has something to look for
    assert course.leaks(released, ROOT) == []  # line by line, near copies included
    for path, chapter in zip(released, CHAPTERS, strict=True):
        text = path.read_text(encoding="utf-8")
        assert course.BEGIN not in text and course.HIDDEN_BEGIN not in text
        hidden = [line.strip() for e in chapter.exercises for line in e.hidden.splitlines() if len(line.strip()) >= course.MIN_LINE]
        assert [line for line in hidden if line in text] == []


def test_the_source_keeps_the_hidden_tests_the_release_drops(graded) -> None:  # type: ignore[no-untyped-def]
    base, _ = graded
    hidden = [(c, e) for c in CHAPTERS for e in c.exercises if e.hidden]
    assert len(hidden) >= 3
    for chapter, e in hidden:
        source = (ROOT / "course" / "source" / chapter.stem / f"{chapter.stem}.ipynb").read_text(encoding="utf-8")
        released = (base / chapter.stem / "release" / chapter.stem / f"{chapter.stem}.ipynb").read_text(encoding="utf-8")
        assert course.HIDDEN_BEGIN in source and course.HIDDEN_BEGIN not in released
        assert f"wslab.check.{e.check_name}(" in released  # the visible check stays

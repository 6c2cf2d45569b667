"""tools/student_release.py: the chapters go out, no solution code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def solution_cells() -> list[str]:
    return [
        cell.source
        for path in SOLUTIONS
        for cell in nbformat.read(path, as_version=4).cells
        if "solution" in cell.metadata.get("tags", [])
    ]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release") / "wslab-students"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "student_release.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "no solutions" in done.stdout
    return out


def release_texts(release: Path) -> dict[str, str]:
    return {str(p.relative_to(release)): p.read_text(encoding="utf-8", errors="replace") for p in release.rglob("*") if p.is_file()}


def test_there_is_a_solution_for_every_chapter() -> None:
    assert [p.name[:2] for p in SOLUTIONS][:7] == ["00", "01", "02", "03", "04", "05", "06"]
    assert len(solution_cells()) >= 16


def test_the_chapters_are_there_without_the_solutions_folder(release: Path) -> None:
    chapters = {p.name for p in (release / "notebooks").glob("*.ipynb")}
    assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} == chapters
    assert {"00-start-here.ipynb", "04-advanced.ipynb"} <= chapters
    assert (release / "src" / "wslab" / "check" / "__init__.py").exists()
    assert (release / "src" / "wslab" / "check" / "ch05.py").exists()
    assert (release / "src" / "wslab" / "check" / "ch06.py").exists()
    assert (release / "requirements.txt").exists()
    assert not (release / "solutions").exists()
    assert not list(release.rglob("*solutions*"))


def test_no_solution_cell_appears_in_the_release(release: Path) -> None:
    texts = release_texts(release)
    for source in solution_cells():
        for name, text in texts.items():
            assert source not in text, f"a solution cell is in {name}"
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import student_release
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert len(student_release.solution_lines(ROOT)) > 20  # the line check has something to look for
    assert student_release.leaks(release, ROOT) == []


@pytest.mark.parametrize(("chapter", "solutions"), [("00-start-here", "00-solutions"), ("05-chat", "05-solutions")])
def test_the_leak_check_catches_a_solution_in_a_chapter(release: Path, tmp_path: Path, chapter: str, solutions: str) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import student_release
    finally:
        sys.path.remove(str(ROOT / "tools"))
    solution = next(
        cell.source
        for cell in nbformat.read(ROOT / "solutions" / f"{solutions}.ipynb", as_version=4).cells
        if "solution" in cell.metadata.get("tags", [])
    )
    notebook = nbformat.read(release / "notebooks" / f"{chapter}.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(solution))
    leaky = tmp_path / "leaky"
    (leaky / "notebooks").mkdir(parents=True)
    nbformat.write(notebook, leaky / "notebooks" / f"{chapter}.ipynb")
    assert student_release.leaks(leaky, ROOT)
    tagged = tmp_path / "tagged.ipynb"
    notebook.cells[-1].metadata["tags"] = ["solution"]
    nbformat.write(notebook, tagged)
    student_release.strip_notebook(tagged)
    assert solution not in tagged.read_text(encoding="utf-8")


def test_exercise_cells_stay_stubs_without_outputs(release: Path) -> None:
    for path in (release / "notebooks").glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if "exercise" in cell.metadata.get("tags", []):
                assert cell.outputs == [] and cell.execution_count is None


def test_every_exercise_ends_with_a_wslab_check(release: Path) -> None:
    """Chapters 05 and 06 too: each stub calls ``await wslab.check.<name>(...)``, a check the release's wslab has."""
    from wslab import check

    called = []
    for path in sorted((release / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if "exercise" in cell.metadata.get("tags", []) and "await wslab." in cell.source:
                line = next(line for line in cell.source.splitlines() if line.startswith("await wslab."))
                assert line.startswith("await wslab.check."), f"{path.name}: {line}"
                called.append((path.name[:2], line.removeprefix("await wslab.check.").split("(")[0]))
    assert {name for _, name in called} <= set(check.__all__)
    assert [name for chapter, name in called if chapter == "05"] == ["who", "typing", "whisper"]
    assert [name for chapter, name in called if chapter == "06"] == ["max_size_test", "going_away", "percentiles"]

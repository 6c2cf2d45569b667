"""The classroom kit, generated from one source: ``course/exercises/NN-name.toml``, one file per chapter.

    python tools/course.py build          # write the chapters' exercise cells, solutions/ and course/source/
    python tools/course.py check          # exit 1 and name every generated file that is stale
    python tools/course.py release DIR    # the learners' folder: chapters and package, no solution

Each exercise's solution is written once, with nbgrader's ``### BEGIN SOLUTION`` / ``### END SOLUTION``
regions around the part the learner writes. From it come (a) the stub in the chapter (each region becomes
``...``), with the one-line check after it, (b) ``solutions/NN-solutions.ipynb`` (the regions' markers removed,
then the check and any hidden test; nbval validates it), and (c) the nbgrader source notebook
``course/source/NN-name/NN-name.ipynb``: the solution cell with its regions, then a locked test cell worth
``points`` that asserts ``(await wslab.check.X(...)).passed``, plus the hidden test between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``. The questionnaire goes into the chapter; its answers
go into the solutions notebook only. ``build`` rewrites a solutions notebook only when its cells changed (then
run it again, to save its outputs); a chapter keeps every cell outside its exercise block.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB_TAGS = ["exercise", "nbval-skip", "skip-execution"]
BLOCK_TAGS = {"exercises", "exercise", "questionnaire"}  # the cells of a chapter that build() owns
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# Files the release copies; a chapter that names a file under tests/ or bench/ gets that file too.
RELEASED = ["requirements.txt", "notebooks", "src"]
IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.egg-info", "*.pyc")
CITED = re.compile(r"`((?:tests|bench)/[\w./-]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)")  # a Markdown link's target
MIN_LINE = 12  # shorter lines (`return seen`, `pass`) say nothing about a solution


@dataclass
class Exercise:
    """One exercise: its statement, its solution (with regions), its check and the autograder's extras."""

    number: int
    title: str
    heading: str
    statement: str
    check: str
    solution: str
    points: int = 1
    hidden: str = ""
    notes: str = ""
    after_markdown: str = ""
    after_code: str = ""

    @property
    def check_name(self) -> str:
        return self.check.split("(")[0]


@dataclass
class Chapter:
    """A chapter's exercises and questionnaire, read from ``course/exercises/<stem>.toml``."""

    stem: str
    title: str
    setup: str
    intro: str
    exercises: list[Exercise]
    questions: list[tuple[str, str]]
    wrong: tuple[int, str]
    context: list[tuple[str, str]] = field(default_factory=list)

    @property
    def number(self) -> str:
        return self.stem[:2]

    @classmethod
    def load(cls, path: Path) -> Chapter:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        exercises = [
            Exercise(number=n, **{k: v.strip("\n") if isinstance(v, str) else v for k, v in item.items()})
            for n, item in enumerate(data["exercise"], 1)
        ]
        return cls(
            stem=path.stem,
            title=data["title"],
            setup=data["setup"].strip("\n"),
            intro=data.get("intro", "").strip("\n"),
            exercises=exercises,
            questions=[(q["q"].strip(), q["a"].strip()) for q in data["question"]],
            wrong=(data["wrong"]["exercise"], data["wrong"]["solution"].strip("\n")),
            context=[(c["markdown"].strip("\n"), c["code"].strip("\n")) for c in data.get("context", [])],
        )


def chapters(root: Path = ROOT) -> list[Chapter]:
    """Every chapter that has exercises, in order."""
    return [Chapter.load(path) for path in sorted((root / "course" / "exercises").glob("*.toml"))]


# ---------------------------------------------------------------- the three forms of a solution


def regions(source: str) -> list[tuple[int, int]]:
    """(begin, end) line indexes of every solution region; raises ValueError on unbalanced markers."""
    found, begin = [], None
    for index, line in enumerate(source.splitlines()):
        if line.strip() == BEGIN and begin is None:
            begin = index
        elif line.strip() == END and begin is not None:
            found.append((begin, index))
            begin = None
        elif line.strip() in (BEGIN, END):
            raise ValueError(f"unbalanced solution markers at line {index + 1}:\n{source}")
    if begin is not None or not found:
        raise ValueError(f"a solution needs balanced {BEGIN} / {END} regions:\n{source}")
    return found


def solved(source: str) -> str:
    """The solution as a learner would write it: the region markers removed."""
    regions(source)
    return "\n".join(line for line in source.splitlines() if line.strip() not in (BEGIN, END))


def stub(source: str) -> str:
    """The chapter's stub: each region replaced by ``...`` at the region's indentation."""
    lines = source.splitlines()
    kept, start = [], 0
    for begin, end in regions(source):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        kept += lines[start:begin] + [indent + "..."]
        start = end + 1
    return "\n".join(kept + lines[start:])


def region_lines(source: str) -> list[str]:
    """The lines inside the regions: what only a solution contains."""
    lines = source.splitlines()
    return [line for begin, end in regions(source) for line in lines[begin + 1 : end]]


# ---------------------------------------------------------------- cells


def _code(source: str, tags: list[str] | None = None, **nbgrader: object) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    if nbgrader:
        cell.metadata["nbgrader"] = {"schema_version": 3, "task": False, **nbgrader}
    return cell


def _markdown(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(source)


WIDTH = 114  # the chapters' Markdown line length


def _numbered(items: list[str]) -> str:
    """A Markdown numbered list; each paragraph of an item is filled to the chapters' line length."""
    filled = []
    for n, item in enumerate(items, 1):
        paragraphs = [
            textwrap.fill(" ".join(p.split()), WIDTH - 3, break_long_words=False, break_on_hyphens=False)
            for p in item.split("\n\n")
        ]
        filled.append(f"{n}. " + textwrap.indent("\n\n".join(paragraphs), "   ").lstrip())
    return "\n".join(filled)


def chapter_block(chapter: Chapter) -> list[nbformat.NotebookNode]:
    """The cells build() puts in a chapter: the exercises, their stubs, the questionnaire."""
    listed = _numbered([f"**{e.title}{'' if e.title[-1] in '.?!' else '.'}** {e.statement}" for e in chapter.exercises])
    exercises = _markdown("## Exercises\n\n" + (chapter.intro + "\n\n" if chapter.intro else "") + listed)
    exercises.metadata["tags"] = ["exercises"]
    cells = [exercises]
    for e in chapter.exercises:
        cells.append(_code(f"# Exercise {e.number}: {e.heading}\n{stub(e.solution)}\n\nawait wslab.check.{e.check}", STUB_TAGS))
    questionnaire = _markdown(
        "## Questionnaire\n\nAnswer each in a sentence or two, in your own words; the chapter has what you need.\n\n"
        + _numbered([q for q, _ in chapter.questions])
    )
    questionnaire.metadata["tags"] = ["questionnaire"]
    return cells + [questionnaire]


def solutions_notebook(chapter: Chapter) -> nbformat.NotebookNode:
    """``solutions/NN-solutions.ipynb``: every solution, its check and hidden test, the questionnaire's answers."""
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    cells = [
        _markdown(
            f"# {chapter.title}: solutions\n\n"
            "Teachers' copy, generated from the chapter's exercise file (do not edit it here). Every solution is "
            "followed by the chapter's one-line check, which prints `PASS`, and by the autograder's hidden test "
            "where there is one; the questionnaire's answers close the notebook.\n\n"
            f"[Chapter {chapter.number}](../notebooks/{chapter.stem}.ipynb) · [Contents](../README.md)"
        ),
        _code("%xmode Minimal\n" + chapter.setup),
    ]
    for markdown, code in chapter.context:
        cells += [_markdown(markdown), _code(code)]
    for e in chapter.exercises:
        cells.append(_markdown(f"## Exercise {e.number}: {e.heading}" + (f"\n\n{e.notes}" if e.notes else "")))
        cells += [_code(solved(e.solution), ["solution"]), _code(f"await wslab.check.{e.check}")]
        if e.hidden:
            cells += [_markdown("The autograder's hidden test:"), _code(e.hidden)]
        if e.after_markdown:
            cells.append(_markdown(e.after_markdown))
        if e.after_code:
            cells.append(_code(e.after_code, ["solution"]))
    answers = _numbered([f"**{q}**\n\n{a}" for q, a in chapter.questions])
    cells += [_markdown("## Questionnaire: answers\n\n" + answers), _code("await wslab.stop_all()")]
    notebook.cells = cells
    return notebook


def course_notebook(chapter: Chapter) -> nbformat.NotebookNode:
    """The nbgrader source notebook: solution cells with regions, locked test cells with points."""
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": KERNELSPEC})
    total = sum(e.points for e in chapter.exercises)
    cells = [
        _markdown(
            f"# {chapter.title}: exercises ({total} points)\n\n"
            + (chapter.intro + "\n\n" if chapter.intro else "")
            + "Write your code where it says `YOUR CODE HERE` and delete the `raise` line. The cell after each\n"
            "exercise runs its check (it prints `PASS` or `FAIL` with a hint); grading runs the same cells, and\n"
            "may add a case of its own. Before you submit, run the notebook from the top (Kernel → Restart Kernel\n"
            "and Run All Cells)."
        ),
        _code(chapter.setup, grade=False, solution=False, locked=True, grade_id="setup"),
    ]
    for index, (markdown, code) in enumerate(chapter.context, 1):
        cells += [_markdown(markdown), _code(code, grade=False, solution=False, locked=True, grade_id=f"context-{index}")]
    for e in chapter.exercises:
        cells.append(_markdown(f"## Exercise {e.number}: {e.title} ({e.points} point{'s' if e.points > 1 else ''})\n\n{e.statement}"))
        cells.append(_code(e.solution, grade=False, solution=True, locked=False, grade_id=f"exercise-{e.number}"))
        test = f"assert (await wslab.check.{e.check}).passed"
        if e.hidden:
            test += f"\n{HIDDEN_BEGIN}\n{e.hidden}\n{HIDDEN_END}"
        cells.append(_code(test, grade=True, solution=False, locked=True, points=e.points, grade_id=f"exercise-{e.number}-test"))
    cells.append(_code("await wslab.stop_all()", grade=False, solution=False, locked=True, grade_id="stop-all"))
    notebook.cells = cells
    return notebook


def _ids(cells: list[nbformat.NotebookNode], prefix: str) -> None:
    """Stable cell ids, so that a rebuild changes nothing when the source did not change."""
    for index, cell in enumerate(cells):
        cell["id"] = f"{prefix}-{index}"


# ---------------------------------------------------------------- build and check


def _shape(cells: list[dict]) -> list[tuple[str, str, list[str]]]:
    """What build() decides about a cell: its type, source and tags (not its outputs)."""
    return [(c["cell_type"], c["source"], list(c.get("metadata", {}).get("tags", []))) for c in cells]


def _block(notebook: nbformat.NotebookNode, path: Path) -> tuple[int, int]:
    """(start, stop) of the chapter's exercise block: the contiguous cells tagged exercises/exercise/questionnaire."""
    owned = [i for i, c in enumerate(notebook.cells) if BLOCK_TAGS & set(c.metadata.get("tags", []))]
    if not owned or owned != list(range(owned[0], owned[-1] + 1)):
        raise SystemExit(f"{path}: the exercise cells must be contiguous and tagged exercises/exercise/questionnaire")
    return owned[0], owned[-1] + 1


def _write(notebook: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)  # validates; the format Jupyter itself saves


def targets(chapter: Chapter, root: Path) -> dict[str, Path]:
    return {
        "chapter": root / "notebooks" / f"{chapter.stem}.ipynb",
        "solutions": root / "solutions" / f"{chapter.number}-solutions.ipynb",
        "course": root / "course" / "source" / chapter.stem / f"{chapter.stem}.ipynb",
    }


def stale(root: Path = ROOT, write: bool = False) -> list[str]:
    """The generated files that differ from what the exercise files say (written anew when ``write``)."""
    found = []
    for chapter in chapters(root):
        paths = targets(chapter, root)

        notebook = nbformat.read(paths["chapter"], as_version=4)
        start, stop = _block(notebook, paths["chapter"])
        block = chapter_block(chapter)
        if _shape(notebook.cells[start:stop]) != _shape(block):
            found.append(f"{paths['chapter'].relative_to(root)}: its exercise cells")
            if write:
                _ids(block, f"exercises-{chapter.number}")
                notebook.cells[start:stop] = block
                _write(notebook, paths["chapter"])

        solutions = solutions_notebook(chapter)
        current = nbformat.read(paths["solutions"], as_version=4).cells if paths["solutions"].exists() else []
        if _shape(current) != _shape(solutions.cells):
            found.append(f"{paths['solutions'].relative_to(root)}: its cells (build, then run it again)")
            if write:
                _ids(solutions.cells, f"solutions-{chapter.number}")
                _write(solutions, paths["solutions"])

        course = course_notebook(chapter)
        _ids(course.cells, f"course-{chapter.number}")
        if not paths["course"].exists() or paths["course"].read_text(encoding="utf-8") != nbformat.writes(course) + "\n":
            found.append(str(paths["course"].relative_to(root)))
            if write:
                _write(course, paths["course"])
    return found


# ---------------------------------------------------------------- leaks


def _normal(line: str) -> str:
    """A line without its comment and with its spaces collapsed, so that reformatting hides nothing."""
    code = line.split(" #", 1)[0] if not line.lstrip().startswith("#") else ""
    return " ".join(code.split())


def teaching_lines(root: Path = ROOT) -> set[str]:
    """Lines that the learners get anyway: the chapters outside their stubs, and the wslab package."""
    lines: set[str] = set()
    for path in (root / "notebooks").glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if "exercise" not in cell.metadata.get("tags", []):
                lines |= {_normal(line) for line in cell.source.splitlines()}
    for path in (root / "src").rglob("*.py"):
        lines |= {_normal(line) for line in path.read_text(encoding="utf-8").splitlines()}
    return lines


def solution_lines(root: Path = ROOT) -> set[str]:
    """Every line of solution code (inside the regions, and the solutions-only follow-ups) not taught anyway."""
    lines = set()
    for chapter in chapters(root):
        for e in chapter.exercises:
            lines |= {_normal(line) for line in region_lines(e.solution) + e.after_code.splitlines()}
    return {line for line in lines if len(line) >= MIN_LINE} - teaching_lines(root)


def released_text(path: Path) -> list[str]:
    """The lines a learner can read in one file (the sources and outputs of a notebook's cells)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return text.splitlines()
    lines = []
    for cell in nbformat.read(path, as_version=4).cells:
        lines += cell.source.splitlines()
        for output in cell.get("outputs", []):
            lines += "".join(output.get("text", "")).splitlines()
    return lines


def leaks(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``file: line`` for every solution line, or near copy of one (renamed, respaced), in what learners read.

    Notebooks and Markdown are checked line by line. A Python file (a test the chapters cite) counts only two
    solution lines in a row: alone, a line such as ``await asyncio.sleep(0.2)`` is any program's.
    """
    wanted = sorted(solution_lines(root))
    taught = teaching_lines(root)

    def is_solution(normal: str) -> bool:
        return normal in wanted or bool(difflib.get_close_matches(normal, wanted, n=1, cutoff=0.85))

    found = []
    for path in paths:
        lines = [line for line in released_text(path) if len(_normal(line)) >= MIN_LINE and _normal(line) not in taught]
        hits = [is_solution(_normal(line)) for line in lines]
        for index, line in enumerate(lines):
            alone = path.suffix == ".py" and not (index and hits[index - 1]) and not (index + 1 < len(hits) and hits[index + 1])
            if hits[index] and not alone:
                found.append(f"{path.name}: {line.strip()}")
    return found


# ---------------------------------------------------------------- the learners' release


TEACHERS_ONLY = ("TEACHING.md", "solutions/", "course/", "tools/", "requirements-teacher.txt")
# The README's sections a learner needs, in its order; the rest is for authors and teachers.
LEARNERS_SECTIONS = ("Chapters", "When a port is taken", "When a client cell cannot reach the server", "The `wslab` package")
LEARNERS_START = """## Start

You need Python 3.11 or newer. In a fresh virtual environment (`python3 -m venv .venv && source .venv/bin/activate`):

```bash
python -m pip install -r requirements.txt && python -m jupyter lab notebooks/00-start-here.ipynb
```

Every chapter ends with exercises, each with a one-line check that prints `PASS` or `FAIL` with a hint, and a
questionnaire. `python -m pytest` checks that every chapter still runs as it was saved.

"""


def learners_readme(text: str) -> str:
    """The README as learners get it: its introduction, the sections they need, and how to start."""
    intro, *sections = re.split(r"(?m)^(?=## )", text)
    titles = {section.splitlines()[0].removeprefix("## ").strip(): section for section in sections}
    kept = [titles[title] for title in LEARNERS_SECTIONS if title in titles]
    readme = intro + (kept[0] if kept else "") + LEARNERS_START + "".join(kept[1:])
    return "\n".join(line for line in readme.splitlines() if not any(name in line for name in TEACHERS_ONLY)) + "\n"


def release(out: Path, root: Path = ROOT) -> Path:
    """Write the learners' folder to ``out`` (new or empty) and verify that no solution line is in it."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in RELEASED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=IGNORED)
        else:
            shutil.copy2(source, out / name)
    readme = learners_readme((root / "README.md").read_text(encoding="utf-8"))
    (out / "README.md").write_text(readme, encoding="utf-8")
    texts = [readme] + [path.read_text(encoding="utf-8") for path in (root / "notebooks").glob("*.ipynb")]
    for name in sorted({m for text in texts for m in CITED.findall(text)}):
        source = root / name.rstrip("/")
        if not source.exists():
            raise SystemExit(f"a chapter or the README cites {name}, which does not exist")
        if name == "tests/":  # the folder as a whole holds the checks' reference solutions: only cited files go
            continue
        if source.is_dir():
            shutil.copytree(source, out / name.rstrip("/"), ignore=IGNORED, dirs_exist_ok=True)
        else:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / name)
    if (out / "tests").exists():  # the cited tests run with the project's fixtures
        for helper in ("__init__.py", "conftest.py"):
            shutil.copy2(root / "tests" / helper, out / "tests" / helper)
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    paths = [p for p in ("tests", "notebooks") if (out / p).exists()]
    pyproject, count = re.subn(r"(?m)^testpaths = .*$", f"testpaths = {json.dumps(paths)}", pyproject)
    if count != 1:
        raise SystemExit("pyproject.toml: no `testpaths = [...]` line to rewrite")
    (out / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    texts = [p for p in out.rglob("*") if p.is_file() and p.suffix in {".ipynb", ".py", ".md", ".txt", ".toml", ".cfg", ".html"}]
    found = leaks(texts, root)
    if found:
        raise SystemExit("solution code leaked into the release:\n" + "\n".join(found))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, check or release the classroom kit.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="write every generated file from course/exercises/")
    commands.add_parser("check", help="exit 1 if a generated file is stale")
    released = commands.add_parser("release", help="the learners' folder, without solutions")
    released.add_argument("out", type=Path, help="a new, empty folder")
    args = parser.parse_args(argv)
    if args.command == "release":
        out = release(args.out)
        print(f"learners' release in {out}: {len(list((out / 'notebooks').glob('*.ipynb')))} chapters, no solutions")
        return 0
    found = stale(write=args.command == "build")
    verb = "written" if args.command == "build" else "stale"
    print("\n".join(f"{verb}: {name}" for name in found) or "everything is up to date")
    return 1 if found and args.command == "check" else 0


if __name__ == "__main__":
    sys.exit(main())

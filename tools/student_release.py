"""Build a student release: the chapters and the wslab package, without any solution.

    python tools/student_release.py --out ../wslab-students

Copies README.md, requirements.txt, pyproject.toml, src/ and notebooks/ (never solutions/), then in every
notebook drops the cells tagged ``solution``, clears the outputs of ``exercise`` cells, and finally checks
that no line of code from solutions/ appears anywhere in the release.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["README.md", "TEACHING.md", "requirements.txt", "pyproject.toml", "src", "notebooks"]
STUB_LINES = ("def ", "async def ", "class ", "#", "await wslab.check.")
IGNORED = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "*.egg-info", "*.pyc")


def strip_notebook(path: Path) -> None:
    """Remove ``solution`` cells and the outputs of ``exercise`` cells, in place."""
    notebook = nbformat.read(path, as_version=4)
    kept = []
    for cell in notebook.cells:
        tags = set(cell.metadata.get("tags", []))
        if "solution" in tags:
            continue
        if cell.cell_type == "code" and "exercise" in tags:
            cell.outputs = []
            cell.execution_count = None
        kept.append(cell)
    notebook.cells = kept
    nbformat.write(notebook, path)


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if len(line.strip()) > 12}


def teaching_lines(root: Path) -> set[str]:
    """Lines that the chapters (outside exercise cells) and the wslab package already show anyway."""
    lines: set[str] = set()
    for path in (root / "notebooks").rglob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            tags = set(cell.metadata.get("tags", []))
            if "exercise" in tags:  # a stub gives away only its signatures and its check
                lines |= {line for line in _lines(cell.source) if line.startswith(STUB_LINES)}
            elif "solution" not in tags:
                lines |= _lines(cell.source)
    for path in (root / "src").rglob("*.py"):
        lines |= _lines(path.read_text(encoding="utf-8"))
    return lines


def solution_lines(root: Path) -> set[str]:
    """The lines of code that only the solution cells (tag ``solution``) of solutions/ contain."""
    lines: set[str] = set()
    for path in (root / "solutions").glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if "solution" in cell.metadata.get("tags", []):
                lines |= _lines(cell.source)
    return lines - teaching_lines(root)


def leaks(release: Path, root: Path = ROOT) -> list[str]:
    """Lines of solution code found in the release, as ``file: line``."""
    wanted = solution_lines(root)
    found = []
    for path in release.rglob("*"):
        if path.is_file() and path.suffix in {".ipynb", ".py", ".md", ".txt", ".toml", ".cfg", ".html"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix == ".ipynb":
                text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
            present = {line.strip() for line in text.splitlines()}
            found += [f"{path.relative_to(release)}: {line}" for line in sorted(wanted & present)]
    return found


def build(out: Path, root: Path = ROOT) -> Path:
    """Write the release to ``out`` (which must not exist, or be empty) and verify it."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, out / name, ignore=IGNORED)
        elif source.exists():
            shutil.copy2(source, out / name)
    for notebook in (out / "notebooks").rglob("*.ipynb"):
        strip_notebook(notebook)
    found = leaks(out, root)
    if found:
        raise SystemExit("solution code leaked into the release:\n" + "\n".join(found))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Copy the chapters to DIR without solutions.")
    parser.add_argument("--out", required=True, type=Path, help="a new, empty folder for the release")
    args = parser.parse_args(argv)
    out = build(args.out)
    chapters = sorted(p.name for p in (out / "notebooks").glob("*.ipynb"))
    print(f"student release in {out}: {len(chapters)} chapters, no solutions")
    return 0


if __name__ == "__main__":
    sys.exit(main())

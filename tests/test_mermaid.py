"""Every ```mermaid block in the notebooks parses with the mermaid that JupyterLab bundles.

JupyterLab 4.6.6 renders Markdown diagrams with mermaid 11.16.1; a diagram that mermaid cannot
parse shows up as its source in an error box. Each diagram is parsed here with that exact
release (package.json pins it), in headless Chromium, from a page served on 127.0.0.1.
One browser and one page serve every diagram.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from .conftest import CHROMIUM, CHROMIUM_FLAGS, require

ROOT = Path(__file__).parent.parent
MERMAID = ROOT / "node_modules" / "mermaid"
BLOCK = re.compile(r"^[ \t]*```mermaid[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)  # also inside list items

# The page imports mermaid's self-contained ESM build (it loads its chunks from the same folder).
PAGE = b"""<!doctype html>
<meta charset="utf-8">
<script type="module">
import mermaid from "./mermaid.esm.min.mjs";
mermaid.initialize({ startOnLoad: false });
window.mermaidParse = async (text) => {
  try {
    await mermaid.parse(text);
    return null;
  } catch (error) {
    return String(error && error.message ? error.message : error);
  }
};
</script>
"""

# Chapter 00's first diagram as it was: the participant `Loop` collides with the `loop` keyword.
BROKEN = """sequenceDiagram
    participant Cell as your cell (client)
    participant Loop as kernel event loop
    Cell->>Loop: await connect(server.uri)
"""


class Diagram(NamedTuple):
    notebook: str
    cell: int
    text: str


def diagrams() -> list[Diagram]:
    """Every ```mermaid block in the Markdown cells of notebooks/ and solutions/."""
    found = []
    for path in sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("solutions/*.ipynb")]):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                source = "".join(cell["source"])
                found += [Diagram(f"{path.parent.name}/{path.name}", index, m.group(1)) for m in BLOCK.finditer(source)]
    return found


DIAGRAMS = diagrams()


class _Files(SimpleHTTPRequestHandler):
    """Serves mermaid's dist folder, and the page at `/`; .mjs as JavaScript (module scripts need it)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def do_GET(self) -> None:
        if self.path != "/":
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are not news."""


def _version(package_json: Path, dependency: str | None = None) -> str | None:
    """The version a package.json declares (or pins for ``dependency``); None when the file is missing."""
    if not package_json.is_file():
        return None
    data = json.loads(package_json.read_text(encoding="utf-8"))
    return data["dependencies"][dependency] if dependency else data["version"]


def _install_mermaid() -> None:
    """`npm ci` installs the pinned mermaid (and ws) when node_modules lacks it, as on a fresh clone."""
    pinned = _version(ROOT / "package.json", "mermaid")
    if _version(MERMAID / "package.json") == pinned:
        return
    npm = shutil.which("npm")
    require(npm is not None, "npm (it installs the node package mermaid)")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"`npm ci` failed:\n{done.stdout}{done.stderr}"
    assert _version(MERMAID / "package.json") == pinned, f"`npm ci` did not install mermaid {pinned}"


@pytest.fixture(scope="module")
def parse() -> Iterator[Any]:
    """A function: diagram text -> None if mermaid parses it, else mermaid's error message."""
    require(CHROMIUM is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - requirements.txt installs it
        require(False, "the Python package playwright")
    _install_mermaid()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Files, directory=str(MERMAID / "dist")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
            page.wait_for_function("window.mermaidParse !== undefined", timeout=30_000)
            yield lambda text: page.evaluate("(text) => window.mermaidParse(text)", text)
            browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_the_pinned_mermaid_has_the_major_version_jupyterlab_bundles() -> None:
    """JupyterLab lists the mermaid it bundles among its static files' third-party licenses."""
    licenses = Path(sys.prefix) / "share" / "jupyter" / "lab" / "static" / "third-party-licenses.json"
    require(licenses.is_file(), "JupyterLab (its static files)")
    bundled = {p["name"]: p["versionInfo"] for p in json.loads(licenses.read_text(encoding="utf-8"))["packages"]}
    pinned = _version(ROOT / "package.json", "mermaid")
    assert pinned is not None and pinned.split(".")[0] == bundled["mermaid"].split(".")[0], (pinned, bundled["mermaid"])


def test_the_notebooks_have_diagrams() -> None:
    assert len(DIAGRAMS) >= 10, DIAGRAMS


def test_mermaid_rejects_a_participant_named_like_a_keyword(parse: Any) -> None:
    """The check catches the diagram JupyterLab showed as an error box."""
    error = parse(BROKEN)
    assert error is not None and "Parse error" in error, error


@pytest.mark.parametrize("diagram", DIAGRAMS, ids=[f"{d.notebook}:cell{d.cell}" for d in DIAGRAMS])
def test_diagram_parses(parse: Any, diagram: Diagram) -> None:
    error = parse(diagram.text)
    assert error is None, f"{diagram.notebook}, cell {diagram.cell}: mermaid {error}\n{diagram.text}"

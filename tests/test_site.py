"""The static site: it builds offline with warnings as errors, and reads right in a real browser.

The site is built once (``tools/build_site.py``, into a temporary folder), served on 127.0.0.1, and
every chapter page is visited once in headless Chromium, with every request outside 127.0.0.1 refused
and recorded. The tests below check what that visit saw.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import CHROMIUM, CHROMIUM_FLAGS, require
from .test_mermaid import BLOCK, MERMAID

ROOT = Path(__file__).parent.parent
OTHER_PAGES = ["README.md", "TEACHING.md", "src/wslab/chat/PROTOCOL.md"]
SEARCHED_CHAPTER = "04-advanced"
# Not copied for the build: what an install or a test run leaves, and node_modules (linked instead).
NOT_COPIED = shutil.ignore_patterns(".git", ".venv*", "_build", ".hypothesis", ".pytest_cache", "__pycache__",
                                    "*.egg-info", ".ipynb_checkpoints", "node_modules")


def _load(path: Path) -> ModuleType:
    """A module from a file outside the test package (the build script, the book's extension)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD_SITE = _load(ROOT / "tools" / "build_site.py")  # imports the book tools only when it builds
BOOK_TOOLS = "Jupyter Book (python -m pip install -r requirements-book.txt)"


def notebook(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def markdown_of(path: Path) -> str:
    """The prose of a page: a notebook's Markdown cells, or a Markdown file."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    return "\n".join("".join(c["source"]) for c in notebook(path)["cells"] if c["cell_type"] == "markdown")


def word_only_in(chapter: Path, pages: list[Path], added: str) -> str:
    """A word of ``chapter``'s prose that no other of the ``pages`` (nor the text ``added`` to every page) has."""
    others = " ".join(p.read_text(encoding="utf-8") for p in pages if p != chapter).lower()
    others += added.lower()
    words = sorted(set(re.findall(r"\b[a-z]{8,}\b", markdown_of(chapter))), key=lambda w: (-len(w), w))
    unique = [w for w in words if w[:6] not in others]  # the prefix: the search stems words
    assert unique, f"{chapter.name} has no word of its own for the search test"
    return unique[0]


def expected_outputs(path: Path) -> tuple[int, list[str]]:
    """How many code cells of a notebook have saved outputs, and the first line of each printed output."""
    cells, lines = 0, []
    for cell in notebook(path)["cells"]:
        if cell["cell_type"] != "code" or not cell.get("outputs"):
            continue
        cells += 1
        for output in cell["outputs"]:
            if output["output_type"] == "stream" and output["name"] == "stdout":
                first = next((line.strip() for line in "".join(output["text"]).splitlines() if line.strip()), None)
                if first:
                    lines.append(first)
    return cells, lines


@dataclass
class Site:
    """The built site: the copy of the repository it was built from, its HTML folder, what the build printed."""

    root: Path
    html: Path
    log: str

    @property
    def chapters(self) -> list[Path]:
        return sorted(self.root.glob("notebooks/[0-9][0-9]-*.ipynb"))

    @property
    def other_pages(self) -> list[Path]:
        return [self.root / page for page in OTHER_PAGES]


@pytest.fixture(scope="module")
def extension() -> ModuleType:
    """The book's Sphinx extension (book/_ext/wslab_site.py)."""
    require(importlib.util.find_spec("sphinx") is not None, BOOK_TOOLS)
    return _load(ROOT / "book" / "_ext" / "wslab_site.py")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """One fresh build for the whole module (warnings are errors), from a copy of the repository.

    The tests compare the pages with the notebooks of that copy, so that a chapter saved again meanwhile
    in the working tree cannot make them disagree.
    """
    require(importlib.util.find_spec("jupyter_book") is not None, BOOK_TOOLS)
    require((MERMAID / "dist" / "mermaid.esm.min.mjs").is_file(), "the node package mermaid (npm ci)")
    root = tmp_path_factory.mktemp("site") / "repository"
    shutil.copytree(ROOT, root, ignore=NOT_COPIED)
    (root / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    done = subprocess.run([sys.executable, str(root / "tools" / "build_site.py")],
                          cwd=root, capture_output=True, text=True, timeout=50)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"the site does not build (warnings are errors):\n{log}"
    return Site(root, root / "_build" / "html", log)


@dataclass
class Visit:
    """What the browser saw on one page."""

    status: int
    nav: list[str]
    diagrams: list[dict[str, Any]]
    outputs: int
    output_text: str
    text: str
    prose: str
    frames: list[str]
    links: list[str]
    title: str
    footer: str


@dataclass
class Browse:
    """Every chapter page, the search for a word of chapter 04, and the requests refused."""

    chapters: dict[str, Visit] = field(default_factory=dict)
    others: dict[str, Visit] = field(default_factory=dict)
    search_word: str = ""
    search_results: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


# The page's own words: every text outside code and outputs (which quote what a program printed);
# the diagrams' labels count as words.
PROSE_JS = """() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const parts = [];
    while (walker.nextNode()) {
        const parent = walker.currentNode.parentElement;
        if (!parent.closest('code, pre:not(.mermaid), script, style')) parts.push(walker.currentNode.textContent);
    }
    return parts.join(' ');
}"""

DIAGRAMS_JS = """() => [...document.querySelectorAll('main .mermaid')].map((el) => ({
    svg: el.querySelector('svg') !== null,
    text: el.textContent,
    failed: el.hasAttribute('data-mermaid-render-failed'),
}))"""


def _visit(page: Any, url: str) -> Visit:
    response = page.goto(url, wait_until="load")
    expected = page.evaluate("() => document.querySelectorAll('main .mermaid').length")
    if expected:
        page.wait_for_function(
            "(n) => document.querySelectorAll('main .mermaid[data-processed=\"true\"], main .mermaid[data-mermaid-render-failed]').length === n",
            arg=expected, timeout=20_000)
    return Visit(
        status=response.status,
        nav=page.eval_on_selector_all("nav.bd-docs-nav a", "(links) => links.map((a) => a.href.split('#')[0])"),
        diagrams=page.evaluate(DIAGRAMS_JS),
        outputs=page.eval_on_selector_all("main .cell_output", "(outputs) => outputs.length"),
        output_text=page.eval_on_selector_all("main .cell_output", "(outputs) => outputs.map((o) => o.textContent).join('\\n')"),
        text=page.inner_text("main"),
        prose=page.evaluate(PROSE_JS),
        frames=page.eval_on_selector_all("main iframe", "(frames) => frames.map((f) => f.src)"),
        links=page.eval_on_selector_all("main a.reference.internal", "(links) => links.map((a) => a.href.split('#')[0])"),
        title=page.title(),
        footer=page.inner_text("footer.bd-footer-content"),
    )


@pytest.fixture(scope="module")
def browse(site: Site, extension: ModuleType) -> Iterator[Browse]:
    """Serve the site on 127.0.0.1 and visit it once in Chromium; any other host is refused."""
    require(CHROMIUM is not None, "Chromium (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - requirements.txt installs it
        require(False, "the Python package playwright")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(BUILD_SITE.SiteFiles, directory=str(site.html)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    searched = site.root / "notebooks" / f"{SEARCHED_CHAPTER}.ipynb"
    seen = Browse(search_word=word_only_in(searched, [*site.chapters, *site.other_pages], extension.run_note("")))

    def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            seen.refused.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            context = browser.new_context()
            context.route("**/*", only_loopback)
            page = context.new_page()
            for chapter in site.chapters:
                seen.chapters[chapter.stem] = _visit(page, f"{base}/notebooks/{chapter.stem}.html")
            for other in OTHER_PAGES:
                name = str(PurePosixPath(other).with_suffix(".html"))
                seen.others[name] = _visit(page, f"{base}/{name}")
            page.goto(f"{base}/search.html?q={seen.search_word}")
            page.wait_for_selector("#search-results .search-summary", timeout=20_000)
            seen.search_results = page.eval_on_selector_all("#search-results ul.search > li > a", "(a) => a.map((x) => x.href)")
            browser.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    yield seen


def test_the_site_builds_offline_with_warnings_as_errors(site: Site) -> None:
    assert "WARNING" not in site.log and "ERROR" not in site.log, site.log
    assert (site.html / "README.html").is_file() and (site.html / "search.html").is_file()


def test_every_chapter_is_a_page_and_solutions_are_not(site: Site) -> None:
    pages = {p.relative_to(site.html).as_posix() for p in site.html.rglob("*.html") if "_static" not in p.parts}
    assert {f"notebooks/{c.stem}.html" for c in site.chapters} <= pages
    assert {"README.html", "TEACHING.html", "src/wslab/chat/PROTOCOL.html"} <= pages
    assert not [p for p in site.html.rglob("*") if "solution" in p.name.lower()]


def test_mermaid_is_served_from_the_site_as_esm_only(site: Site) -> None:
    copied = [p for p in (site.html / "_static" / "mermaid").rglob("*") if p.is_file()]
    assert copied and all(p.suffix == ".mjs" for p in copied), sorted({p.suffix for p in copied})


def test_every_page_loads_and_lists_every_chapter(site: Site, browse: Browse) -> None:
    assert set(browse.chapters) == {c.stem for c in site.chapters}
    for name, visit in browse.chapters.items():
        assert visit.status == 200, name
        listed = {urlsplit(href).path.rsplit("/", 1)[-1] for href in visit.nav}
        missing = {f"{c.stem}.html" for c in site.chapters} - listed
        assert not missing, f"{name}: the navigation lacks {sorted(missing)} (is every chapter in book/_toc.yml?)"


def test_every_link_between_pages_resolves(site: Site, browse: Browse) -> None:
    """README's links to the chapters, TEACHING.md and the protocol, and the chapters' own, all land on a page."""
    for name, visit in {**browse.chapters, **browse.others}.items():
        assert visit.status == 200, name
        broken = [href for href in visit.links if not (site.html / urlsplit(href).path.lstrip("/")).is_file()]
        assert not broken, f"{name}: {broken}"
    readme = {urlsplit(href).path.lstrip("/") for href in browse.others["README.html"].links}
    assert {f"notebooks/{c.stem}.html" for c in site.chapters} | {"TEACHING.html", "src/wslab/chat/PROTOCOL.html"} <= readme


def test_every_page_has_the_title_and_the_copyright(browse: Browse) -> None:
    for name, visit in {**browse.chapters, **browse.others}.items():
        assert visit.title.endswith("wslab: real-time WebSockets with asyncio"), (name, visit.title)
        assert "Copyright 2026, the wslab authors (MIT License)" in visit.footer, (name, visit.footer)


def test_every_diagram_is_rendered(site: Site, browse: Browse) -> None:
    for chapter in site.chapters:
        visit = browse.chapters[chapter.stem]
        fences = len(BLOCK.findall(markdown_of(chapter)))
        assert len(visit.diagrams) == fences, f"{chapter.name}: {fences} mermaid blocks, {len(visit.diagrams)} diagrams"
        for diagram in visit.diagrams:
            assert diagram["svg"] and not diagram["failed"], f"{chapter.name}: a diagram is not rendered: {diagram['text'][:200]}"
            assert "Syntax error" not in diagram["text"], f"{chapter.name}: mermaid says Syntax error"
        assert "Syntax error in text" not in visit.text, chapter.name


def test_saved_outputs_are_shown(site: Site, browse: Browse) -> None:
    for chapter in site.chapters:
        visit = browse.chapters[chapter.stem]
        cells, lines = expected_outputs(chapter)
        assert visit.outputs == cells, f"{chapter.name}: {cells} cells with outputs, {visit.outputs} shown"
        missing = [line for line in lines if line not in visit.output_text]
        assert not missing, f"{chapter.name}: printed lines not on the page: {missing[:3]}"


def test_pages_say_how_to_run_them_and_show_no_kernel_frames(browse: Browse) -> None:
    for name, visit in browse.others.items():
        assert "Run it for real" in visit.text and "Binder" in visit.text, name
    for name, visit in browse.chapters.items():
        assert "Run it for real" in visit.text and f"jupyter lab notebooks/{name}.ipynb" in visit.text, name
        assert "Binder" in visit.text and "not tested" in visit.text, name
        assert not [src for src in visit.frames if urlsplit(src).hostname in ("127.0.0.1", "localhost")], name
    assert "Not shown on this site" in browse.chapters["05-chat"].text


def test_search_finds_a_word_only_chapter_04_has(browse: Browse) -> None:
    pages = [urlsplit(href).path.rsplit("/", 1)[-1] for href in browse.search_results]
    assert pages == [f"{SEARCHED_CHAPTER}.html"], (browse.search_word, pages)


def test_no_request_leaves_127_0_0_1(browse: Browse) -> None:
    assert browse.refused == []


def test_every_character_of_the_prose_has_a_font(browse: Browse) -> None:
    """Chromium draws each character with an installed font; a character no font has shows as a box.

    Checked: the site's own words and the chapters' prose. Code and outputs quote what a program
    printed (chapter 05 shows nicknames in other scripts on purpose), so they are not checked here.
    """
    fc_list = shutil.which("fc-list")
    require(fc_list is not None, "fontconfig's fc-list (Debian package fontconfig, a dependency of chromium)")
    pages = [*browse.chapters.values(), *browse.others.values()]
    characters = {ch for visit in pages for ch in visit.prose if ord(ch) > 0x7F and ch.isprintable()}
    lacking = []
    for ch in sorted(characters):
        fonts = subprocess.run([fc_list, f":charset={ord(ch):x}", "family"], capture_output=True, text=True, timeout=10)
        if not fonts.stdout.strip():
            lacking.append(f"U+{ord(ch):04X} {ch}")
    assert not lacking, lacking


def test_a_kernel_served_frame_is_replaced_and_other_outputs_are_kept(extension: ModuleType) -> None:
    frame = {"output_type": "execute_result", "metadata": {}, "execution_count": 1,
             "data": {"text/html": ['<iframe\n  width="100%"\n  src="http://127.0.0.1:43889/"\n></iframe>'], "text/plain": ["<IFrame>"]}}
    remote = {"output_type": "display_data", "metadata": {}, "data": {"text/html": '<iframe src="https://example.org/"></iframe>'}}
    code = {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<pre>x</pre>", "text/latex": "x", "text/plain": "x"}}
    cell = {"cell_type": "code", "outputs": [frame, remote, code]}
    extension._static_outputs(cell)
    assert cell["outputs"][0]["data"] == {"text/markdown": extension.NOT_SHOWN}
    assert cell["outputs"][1] is remote
    assert set(cell["outputs"][2]["data"]) == {"text/html", "text/plain"}


def test_links_to_files_that_are_not_pages_become_their_paths(tmp_path: Path) -> None:
    """A link to a test, a solution or a folder shows the path; a link to nothing still fails the build."""
    require(importlib.util.find_spec("myst_parser") is not None, BOOK_TOOLS)
    require((MERMAID / "dist" / "mermaid.esm.min.mjs").is_file(), "the node package mermaid (npm ci)")
    source = tmp_path / "source"
    (source / "tests").mkdir(parents=True)
    (source / "tests" / "test_x.py").write_text("", encoding="utf-8")
    (source / "solutions").mkdir()
    (source / "solutions" / "00-solutions.md").write_text("# Solutions\n", encoding="utf-8")
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'wslab_site']\nexclude_patterns = ['solutions']\n", encoding="utf-8")
    page = "# Page\n\n[the test](tests/test_x.py), [tests/](tests/), [solutions](solutions/00-solutions.md).\n"
    (source / "index.md").write_text(page, encoding="utf-8")

    def sphinx() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sphinx", "-W", "-E", "-q", "-b", "html", str(source), str(tmp_path / "html")]
        return subprocess.run(command, capture_output=True, text=True, timeout=50)

    done = sphinx()
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "html" / "index.html").read_text(encoding="utf-8")
    for path in ("tests/test_x.py", "solutions/00-solutions.md"):
        assert f'<span class="pre">{path}</span></code> in the repository)' in html, path
    assert '<code class="docutils literal notranslate"><span class="pre">tests/</span></code>' in html
    assert 'href="tests' not in html and 'href="solutions' not in html
    assert not (tmp_path / "html" / "_downloads").exists() and "00-solutions" not in html.replace("solutions/00-solutions.md", "")

    (source / "index.md").write_text(page + "\n[gone](missing.md)\n", encoding="utf-8")
    done = sphinx()
    assert done.returncode != 0 and "missing.md" in done.stderr, done.stderr

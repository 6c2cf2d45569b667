"""What the static site needs beyond Jupyter Book: local mermaid, a "run it" note, no dead frames or links.

- mermaid's ESM build (``node_modules/mermaid``, pinned in package.json) is copied into ``_static/mermaid/``,
  only its ``.mjs`` files, so that diagrams render without a CDN.
- Every page gets a note saying how to run it for real (a static page runs nothing).
- An output that shows a page served by the notebook's own kernel (an ``<iframe>`` on 127.0.0.1, as in
  chapter 05) is replaced by a sentence saying why it is not shown; the notebook itself is untouched.
- A link to a repository file that is not a page (a test, a solution, a folder) becomes the file's path in
  code, instead of a broken link or a copy of the file in the site.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

ROOT = Path(__file__).resolve().parents[2]
MERMAID_DIST = ROOT / "node_modules" / "mermaid" / "dist"
MERMAID_ENTRY = "mermaid.esm.min.mjs"
MERMAID_CHUNKS = Path("chunks") / "mermaid.esm.min"

# An HTML output whose frame, image or script is served by the kernel that ran the notebook.
KERNEL_SERVED = re.compile(r"""<(?:iframe|img|script)\b[^>]*\bsrc=["']?(?:https?:)?//(?:127\.0\.0\.1|localhost)\b""")

NOT_SHOWN = (
    "*Not shown on this site: in the notebook, this output is a live page served by the notebook's own kernel "
    "on 127.0.0.1, which only exists while that kernel runs. Run the chapter to use it.*"
)


def run_note(notebook: str) -> str:
    """The MyST note on every page: how to run the series for real (``notebook`` is opened first)."""
    return f"""
:::{{admonition}} Run it for real
:class: tip
This site shows each chapter with the outputs of one clean run; nothing runs here. In a fresh virtual
environment with Python 3.11 or newer, from a copy of the repository, open the series in JupyterLab:

```bash
python -m pip install -r requirements.txt && python -m jupyter lab {notebook}
```

or check every chapter against the outputs shown here:

```bash
python -m pip install -r requirements.txt && python -m pytest
```

On a JupyterHub, install `requirements.txt` once into the environment the kernels use (the README's JupyterHub
section says more). Binder-style services that build an environment from `requirements.txt` should work too,
but that is not tested.
:::
"""


def _static_outputs(cell: dict[str, Any]) -> None:
    """Fit the outputs of ``cell`` to a static page.

    An output that shows a kernel-served page is replaced with the sentence saying why. An output with
    HTML loses its LaTeX copy (IPython's ``Code`` offers both): the page shows the HTML, and a LaTeX copy
    would make Sphinx load MathJax from the internet.
    """
    for index, output in enumerate(cell.get("outputs", [])):
        if "text/html" in output.get("data", {}):
            output["data"].pop("text/latex", None)
        html = output.get("data", {}).get("text/html", "")
        if KERNEL_SERVED.search("".join(html) if isinstance(html, list) else html):
            cell["outputs"][index] = {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": NOT_SHOWN}}


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Add the run note to a page, and hide the outputs that cannot work in a static page."""
    path = PurePosixPath(Path(app.env.doc2path(docname)).relative_to(app.srcdir).as_posix())
    if path.suffix != ".ipynb":
        source[0] += "\n" + run_note("notebooks/00-start-here.ipynb")
        return
    notebook = json.loads(source[0])
    for cell in notebook["cells"]:
        _static_outputs(cell)
    note = {"cell_type": "markdown", "id": "wslab-site-run-it", "metadata": {}, "source": run_note(str(path))}
    notebook["cells"].insert(1, note)  # after the title cell
    source[0] = json.dumps(notebook)


def _repository_path(app: Sphinx, docname: str, target: str) -> str | None:
    """``target`` (relative to the page ``docname``) as a path in the repository, if it is not a page."""
    file_part = target.split("#", 1)[0]
    if not file_part or "://" in file_part or file_part.startswith("mailto:"):
        return None
    relative = Path(app.srcdir, docname).parent / file_part
    try:
        in_repo = relative.resolve().relative_to(Path(app.srcdir).resolve())
    except ValueError:
        return None
    if not relative.exists() or app.env.path2doc(str(relative.resolve())) in app.env.found_docs:
        return None
    return in_repo.as_posix() + ("/" if relative.is_dir() else "")


def _source_of(app: Sphinx, docname: str) -> str | None:
    """The repository file of a document name that is not a page (a solutions notebook), if it exists."""
    for suffix in app.config.source_suffix:
        if Path(app.srcdir, docname + suffix).is_file():
            return docname + suffix
    return None


def _on_doctree_read(app: Sphinx, doctree: nodes.document) -> None:
    """Links to repository files that are not pages become their path in code (no copy, no broken link)."""
    docname = app.env.docname
    for node in list(doctree.findall(lambda n: isinstance(n, (addnodes.pending_xref, addnodes.download_reference)))):
        if node.get("reftype") != "myst":
            continue
        if node.get("refdomain") == "doc":  # a link to a notebook or Markdown file that is not a page
            target = node["reftarget"]
            path = None if target in app.env.found_docs else _source_of(app, target)
        else:
            path = _repository_path(app, docname, node["reftarget"])
        if path is None:
            continue
        text = node.astext()
        literal = nodes.literal(path, path)
        if not text or text == path:
            node.replace_self(literal)
        else:
            node.replace_self([nodes.inline(text, text), nodes.Text(" ("), literal, nodes.Text(" in the repository)")])


def _on_config_inited(app: Sphinx, config: Any) -> None:
    """Fail early, saying what to do, when mermaid's ESM build is not installed."""
    if not (MERMAID_DIST / MERMAID_ENTRY).is_file():
        raise ExtensionError(f"mermaid is not installed: run `npm ci` in the repository (it installs {MERMAID_DIST.parent.name})")


def _on_build_finished(app: Sphinx, exception: Exception | None) -> None:
    """Copy mermaid's ESM entry point and its chunks (``.mjs`` only) into the site's ``_static/mermaid/``."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mermaid"
    shutil.rmtree(target, ignore_errors=True)
    (target / MERMAID_CHUNKS).mkdir(parents=True)
    shutil.copy2(MERMAID_DIST / MERMAID_ENTRY, target / MERMAID_ENTRY)
    for chunk in (MERMAID_DIST / MERMAID_CHUNKS).glob("*.mjs"):
        shutil.copy2(chunk, target / MERMAID_CHUNKS / chunk.name)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _on_config_inited)
    app.connect("source-read", _on_source_read)
    app.connect("doctree-read", _on_doctree_read, priority=400)  # before Sphinx collects downloads
    app.connect("build-finished", _on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

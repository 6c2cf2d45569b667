"""Build the series as a static site in ``_build/html`` (offline), and preview it on 127.0.0.1.

    python tools/build_site.py            # build, with Sphinx warnings as errors
    python tools/build_site.py --serve    # build, then serve on http://127.0.0.1:8000/ until Ctrl-C

Needs the author's extra tools (``python -m pip install -r requirements-book.txt``) and mermaid from
``npm ci``. The notebooks are not executed: the site shows their saved outputs.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"


def build() -> Path:
    """Build the site afresh with warnings as errors into ``_build/html``; return that folder."""
    from jupyter_book.cli.main import build as jupyter_book_build

    arguments = [str(ROOT), "--config", str(BOOK / "_config.yml"), "--toc", str(BOOK / "_toc.yml"),
                 "--all", "-W", "--keep-going", "--quiet"]
    jupyter_book_build.main(arguments, standalone_mode=False)
    return ROOT / "_build" / "html"


class SiteFiles(SimpleHTTPRequestHandler):
    """Static files, with ``.mjs`` as JavaScript (browsers refuse module scripts of another type)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per file is noise."""


def serve(site: Path, port: int) -> None:
    """Serve ``site`` on 127.0.0.1 until interrupted."""
    with ThreadingHTTPServer(("127.0.0.1", port), partial(SiteFiles, directory=str(site))) as httpd:
        print(f"serving {site.relative_to(ROOT)} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", action="store_true", help="after building, serve the site on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="port for --serve (0: any free port)")
    options = parser.parse_args(argv)
    try:
        site = build()
    except SystemExit as stop:  # jupyter-book reports a failed build by exiting
        return int(stop.code or 1)
    print(f"built {site.relative_to(ROOT)}/index.html")
    if options.serve:
        serve(site, options.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

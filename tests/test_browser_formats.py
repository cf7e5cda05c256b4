"""The ``html``, ``math`` and ``json`` formats and the provenance, in a real JupyterLab.

What only a browser can tell: that JupyterLab typesets a ``math`` reply with MathJax, that an
``html`` reply runs nothing, and that the notebook JupyterLab saves keeps each reply's
provenance in its output's metadata. Chromium is Debian's (``/usr/bin/chromium``); without it
the test is skipped, except in CI (see ``tests/test_browser.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aivvm_magic.server import start_server
from tests.browser import (
    CHROMIUM,
    JupyterLab,
    LabPage,
    artifacts_on_failure,
    launch_chromium,
    wait_until,
    write_notebook,
)

FORMULA = r"x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}"
XSS = (
    '<b>bold</b> <img src=x onerror="window.__pwned=1"> <script>window.__pwned=1</script> '
    '<a href="javascript:window.__pwned=1">link</a> <em onclick="window.__pwned=1">em</em>'
)


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {message}", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    base = tmp_path_factory.mktemp("browser-formats")
    root = base / "root"
    root.mkdir()
    lab = JupyterLab(root, base / "lab")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            lab.start()
            lab.wait_ready()
            context = chromium.new_context(viewport={"width": 1400, "height": 1400})
            page = LabPage(context.new_page(), lab)
            with artifacts_on_failure("formats-loading-jupyterlab", page):
                page.load()
            yield page
            context.close()
        finally:
            lab.stop()
            chromium.close()


def test_math_is_typeset_html_runs_nothing_and_the_saved_notebook_keeps_provenance(lab_page):
    with start_server(engine="echo") as server:
        path = "formats.ipynb"
        write_notebook(Path(lab_page.lab.root_dir) / path)
        with artifacts_on_failure("formats-opening", lab_page):
            notebook = lab_page.open(path)
        try:
            with artifacts_on_failure("formats", lab_page):
                notebook.run(
                    f"%load_ext aivvm_magic\n%config AivvmMagics.base_url = {server.url!r}"
                )
                math = notebook.run(f"%%aivvm -f math\n{FORMULA}")
                html = notebook.run(f"%%aivvm -f html\n{XSS}")
                data = notebook.run('%%aivvm -f json -o data\n{"primes": [2, 3, 5]}')
                value = notebook.run("sum(data['primes'])")

                # MathJax replaces the LaTeX with its own elements once it has typeset it.
                output = notebook.output(math)
                output.locator("mjx-container").first.wait_for(timeout=30_000)
                assert "\\frac" not in output.locator(".aivvm-reply").inner_text()

                shown = notebook.output(html)
                assert shown.locator(".aivvm-reply").inner_text().startswith("bold")
                assert shown.locator("img, script").count() == 0
                shown.get_by_text("link").click()
                shown.get_by_text("em", exact=True).click()
                assert notebook.page.evaluate("window.__pwned") is None

                assert '"primes": [' in notebook.output(data).inner_text()
                assert notebook.output(value).inner_text().split() == ["[5]:", "10"]

                notebook.save()
                saved = notebook.saved_notebook()
                cells = [c for c in saved.cells if c.source.startswith("%%aivvm")]
                provenance = [c.outputs[-1].metadata["aivvm"] for c in cells]
                assert [p["format"] for p in provenance] == ["math", "html", "json"]
                for found in provenance:
                    assert found["target"] == server.url and found["complete"] is True
                    assert found["provider"] == "aivvm" and found["model"] == "gpt-3.5-turbo"
                assert cells[0].outputs[-1].data["text/latex"] == f"$${FORMULA}$$"
        finally:
            notebook.shut_down_kernel()
            wait_until(lambda: not notebook.sessions(), 15, "the kernel to stop")
            lab_page.close_current_tab()

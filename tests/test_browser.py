"""``%%aivvm`` and the chat panel in a real JupyterLab, driven through Chromium.

JupyterLab runs as a subprocess serving a temporary copy of ``notebooks/``; the reference
server runs in this process, so a test can read the requests it received, and it waits
0.15 s between words, so a reply can be watched while it streams. Each test opens a notebook
of its own and types its cells as a person would. A second JupyterLab with no kernels shows
what a saved notebook looks like to someone without one.

The tests need Debian's Chromium (``/usr/bin/chromium``). Without it they are skipped on a
developer machine, and fail in CI (where ``CI`` is set), so they cannot silently stop running.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aivvm_magic.server import start_server
from tests.browser import (
    DONE_PROMPT,
    NOTEBOOKS,
    JupyterLab,
    LabPage,
    NotebookPage,
    artifacts_on_failure,
    chromium_or_skip,
    copy_notebooks,
    keep_artifacts_on_failure,
    lab_and_kernel_less,
    wait_until,
    write_notebook,
)

WORDS = " ".join(f"word{i}" for i in range(30))
XSS = (
    '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=1</script> '
    "[click](javascript:window.__pwned=1)"
)

# What one look at a cell finds: the text of its last reply (None if there is none yet),
# whether a live widget is still in its output, and its prompt ("[*]:" while it runs).
_LOOK_AT_CELL = """(cell) => {
    const replies = cell.querySelectorAll(".jp-OutputArea .aivvm-reply");
    const last = replies[replies.length - 1];
    return {
        reply: last ? last.innerText.trim() : null,
        live: cell.querySelector(".jp-OutputArea .aivvm-stream .aivvm-reply") !== null,
        prompt: cell.querySelector(".jp-InputArea-prompt").innerText,
    };
}"""

# The same for a chat panel's transcript: its last reply, and whether it is still streaming.
_LOOK_AT_TRANSCRIPT = """(cell) => {
    const replies = cell.querySelectorAll(".jp-OutputArea .aivvm-transcript-view .aivvm-reply");
    const last = replies[replies.length - 1];
    return {
        reply: last ? last.innerText.trim() : null,
        live: last ? last.classList.contains("aivvm-live") : false,
    };
}"""


@pytest.fixture(scope="module")
def browser() -> Any:
    """Chromium, through Playwright; skipped (or, in CI, failed) when it is not installed."""
    with chromium_or_skip() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def slow_server():
    """A reference server that streams one word every 0.15 s."""
    with start_server(engine="echo", delay=0.15) as server:
        yield server


@pytest.fixture(scope="module")
def labs(tmp_path_factory, browser):
    """Two JupyterLab servers on one copy of ``notebooks/``: with kernels, and without any."""
    base = tmp_path_factory.mktemp("browser")
    with lab_and_kernel_less(copy_notebooks(NOTEBOOKS, base / "root"), base) as both:
        yield both


@contextlib.contextmanager
def loaded_lab(browser: Any, lab: JupyterLab, what: str) -> Iterator[LabPage]:
    """``lab`` loaded in a page of its own (screenshots under ``what`` if loading fails)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = LabPage(context.new_page(), lab)
    try:
        with artifacts_on_failure(what, page):
            page.load()
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def lab_page(browser, labs):
    """JupyterLab (with kernels) loaded once in a page that the tests share."""
    with loaded_lab(browser, labs[0], "loading-jupyterlab") as page:
        yield page


@pytest.fixture(scope="module")
def kernel_less_page(browser, labs):
    """The JupyterLab without kernels, loaded once in a page of its own."""
    with loaded_lab(browser, labs[1], "loading-jupyterlab-without-kernels") as page:
        yield page


@pytest.fixture
def notebook(request, lab_page, slow_server):
    """A new notebook of the test's own, open in JupyterLab, pointed at ``slow_server``."""
    path = f"{request.node.name}.ipynb"
    write_notebook(lab_page.lab.root_dir / path)
    with artifacts_on_failure(f"{request.node.name}-setup", lab_page):
        notebook = lab_page.open(path)
        setup = notebook.run(
            f"%load_ext aivvm_magic\n%config AivvmMagics.base_url = {slow_server.url!r}"
        )
        assert notebook.output(setup).inner_text().strip() == ""
    yield notebook
    # Stop the kernel now rather than when the server stops: fewer processes at a time.
    notebook.shut_down_kernel()
    lab_page.close_current_tab()


def no_widget_errors(notebook: NotebookPage) -> None:
    """Assert that no widget failed to render anywhere in the page."""
    errors = notebook.page.get_by_text("Error displaying widget")
    assert errors.count() == 0, f"{errors.count()} widget(s) failed to render"


def watch(cell: Any, script: str, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Look at ``cell`` with ``script`` about every 30 ms until ``done(look)``; every look."""
    looks = []
    deadline = time.monotonic() + timeout
    while True:
        look = cell.evaluate(script)
        looks.append(look)
        if done(look):
            return looks
        if time.monotonic() >= deadline:
            raise AssertionError(f"not done after {timeout} s; last look: {look}")
        time.sleep(0.03)


def growing_texts(looks: list[dict[str, Any]], final: str) -> list[str]:
    """The distinct partial texts seen while live: non-empty proper prefixes of ``final``."""
    partial = []
    for look in looks:
        text = look["reply"]
        if look["live"] and text and text != final and text not in partial:
            assert final.startswith(text), f"{text!r} is not the start of {final!r}"
            partial.append(text)
    return partial


@keep_artifacts_on_failure
def test_a_reply_streams_into_the_cell_word_by_word(notebook):
    # The page loads the widget code the first time a widget is shown, which can take a
    # while; a first reply gets that done, so the reply watched below is seen from its start.
    notebook.run("%%aivvm\nWarming up.")
    cell = notebook.run(f"%%aivvm\n{WORDS}", wait=False)
    looks = watch(
        cell,
        _LOOK_AT_CELL,
        lambda look: DONE_PROMPT.fullmatch(look["prompt"]) and not look["live"],
    )
    partial = growing_texts(looks, WORDS)
    assert len(partial) >= 2, f"expected to see the reply grow, saw {partial}"
    final = looks[-1]
    assert final["reply"] == WORDS
    # The live widget has been replaced by the static reply and its status line.
    output = notebook.output(cell)
    assert output.locator(".aivvm-stream").count() == 0
    status = output.locator(".aivvm-status").inner_text()
    # The echo engine answers, and the status line names it.
    assert "echo engine" in status and f"{len(WORDS)} chars" in status
    no_widget_errors(notebook)


@keep_artifacts_on_failure
def test_the_panel_streams_a_reply_and_the_next_cell_sends_that_turn(notebook, slow_server):
    cell = notebook.run("%aivvm panel")
    panel = notebook.output(cell)
    send = panel.get_by_role("button", name="Send")
    send.wait_for()
    no_widget_errors(notebook)

    message = "hello from the panel " + " ".join(f"p{i}" for i in range(20))
    box = panel.locator("textarea[placeholder^='Your message']")
    box.fill(message)
    send.click()
    looks = watch(
        cell, _LOOK_AT_TRANSCRIPT, lambda look: look["reply"] == message and not look["live"]
    )
    partial = growing_texts(looks, message)
    assert len(partial) >= 2, f"expected to see the panel's reply grow, saw {partial}"
    assert box.input_value() == ""  # the message box is cleared once sent
    no_widget_errors(notebook)

    notebook.run("%%aivvm\nAnd now from a cell.")
    assert list(slow_server.requests[-1]["messages"]) == [
        {"role": "user", "content": message},
        {"role": "assistant", "content": message},
        {"role": "user", "content": "And now from a cell."},
    ]
    no_widget_errors(notebook)


@keep_artifacts_on_failure
def test_markup_in_a_reply_runs_nothing_and_shows_as_text(notebook):
    page = notebook.page
    panel_cell = notebook.run("%aivvm panel")
    notebook.output(panel_cell).get_by_role("button", name="Send").wait_for()
    cell = notebook.run(f"%%aivvm\n{XSS}")
    # The reply also streams into the panel, which shows the same conversation.
    watch(panel_cell, _LOOK_AT_TRANSCRIPT, lambda look: look["reply"] and not look["live"])

    for reply in (
        notebook.output(cell).locator(".aivvm-reply"),
        notebook.output(panel_cell).locator(".aivvm-transcript-view .aivvm-reply").last,
    ):
        # The tags show as text; the link may show as text or as a link, but not as one to
        # a javascript: address.
        text = reply.inner_text()
        assert '<img src=x onerror="window.__pwned=1">' in text
        assert "<script>window.__pwned=1</script>" in text
        assert "click" in text
        assert reply.locator("img, script, iframe, svg").count() == 0
        assert reply.locator("a[href^='javascript' i]").count() == 0
        # Click whatever shows "click": a link if there were one, else the text.
        links = reply.get_by_role("link", name="click")
        targets = [links.nth(i) for i in range(links.count())] or [reply.get_by_text("click")]
        for target in targets:
            target.click()
    page.wait_for_timeout(300)  # give a handler, had one been attached, time to run
    assert page.evaluate("typeof window.__pwned") == "undefined"
    no_widget_errors(notebook)


@keep_artifacts_on_failure
def test_a_saved_notebook_shows_the_last_reply_without_a_kernel(notebook, kernel_less_page):
    notebook.run("%%aivvm\nA first reply.")
    last = "The last reply, kept in the saved notebook."
    notebook.run(f"%%aivvm\n{last}")
    notebook.save()
    outputs = [o for c in notebook.saved_notebook().cells for o in c.get("outputs", [])]
    assert outputs[-1]["data"]["text/plain"] == last

    notebook.lab_page.menu("Kernel", "Shut Down Kernel")
    notebook.status_bar.filter(has_text="No Kernel").wait_for()
    wait_until(lambda: not notebook.sessions(), 15, "the kernel to shut down")

    # Open the saved file afresh, in a JupyterLab that has no kernel to start: choose none.
    reopened = kernel_less_page.open(notebook.path, kernel=False)
    try:
        code_cells = reopened.panel.locator(".jp-CodeCell")
        wait_until(lambda: code_cells.count() >= 3, 15, "the saved cells")
        shown = reopened.output(code_cells.nth(2))
        assert shown.locator(".aivvm-reply").inner_text().strip() == last
        assert "echo engine" in shown.locator(".aivvm-status").inner_text()
        assert kernel_less_page.lab.kernels_running() == []
        assert not notebook.sessions()
    finally:
        kernel_less_page.close_current_tab()


@keep_artifacts_on_failure
def test_a_tutorial_notebook_shows_its_stored_outputs_without_a_kernel(kernel_less_page):
    tutorial = kernel_less_page.open("02-conversations-and-panel.ipynb", kernel=False)
    try:
        # A stored %%aivvm reply, and the static transcript kept beside the chat panel.
        outputs = tutorial.panel.locator(".jp-OutputArea")
        outputs.locator(".aivvm-reply", has_text="Plan a weekend in Lisbon.").first.wait_for()
        transcript = outputs.locator(".aivvm-transcript", has_text="museums open on Mondays")
        transcript.first.wait_for()
        no_widget_errors(tutorial)
    finally:
        kernel_less_page.close_current_tab()

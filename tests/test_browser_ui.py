"""How replies and the chat panel look and behave in JupyterLab, in its light and dark themes.

Each test runs once per theme, in Chromium, on notebooks typed as a person would, and keeps a
screenshot of what it checked under ``test-artifacts/screenshots/<theme>/`` on every run. The
measurements it compares (font sizes, line heights, the panel's height) go beside them in
``measurements.json``.

What is checked is what a user notices: a reply looks the same while it streams and once it is
done; code blocks are highlighted and Copy and Insert work; an interrupt and an error are one
line each; the panel is a chat window of a fixed height that follows the newest message, where
Enter sends and Shift+Enter adds a line; and a saved notebook shows its conversation to its
author after a reload and with the kernel off, without "Error displaying widget".
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aivvm_magic.server import start_server
from tests.browser import (
    ARTIFACTS,
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

THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}
#: The panel's transcript height, as PanelLayout sets it.
TRANSCRIPT_HEIGHT = 420

REPLY = """## A plan in three parts

Some words in a first paragraph, long enough to wrap on a narrow screen perhaps.

| step | what |
|------|------|
| 1 | read |
| 2 | write |

```python
def double(x):
    return x * 2  # twice
```

The end of the reply, after the code."""

CODE = "def double(x):\n    return x * 2  # twice"

# The computed text style and place of the first paragraph, heading, table cell and code of
# a cell's last reply, and whether it is still the live widget.
_LOOK = """(cell) => {
    const replies = cell.querySelectorAll(".jp-OutputArea .aivvm-reply");
    const reply = replies[replies.length - 1];
    if (!reply) return null;
    const look = (selector) => {
        const element = reply.querySelector(selector);
        if (!element) return null;
        const style = getComputedStyle(element);
        const box = element.getBoundingClientRect();
        return {
            fontSize: style.fontSize, lineHeight: style.lineHeight,
            fontFamily: style.fontFamily, x: box.x, y: box.y, width: box.width,
        };
    };
    return {
        live: reply.closest(".aivvm-stream") !== null,
        text: reply.innerText,
        p: look("p"), h2: look("h2"), td: look("td"), code: look("pre"),
        rawPipes: [...reply.querySelectorAll("p")].some((p) => p.innerText.startsWith("|")),
    };
}"""

MEASUREMENTS: dict[str, Any] = {}


def measured(theme: str, name: str, value: Any) -> None:
    """Keep a measurement beside the screenshots, for whoever reads the run's artifacts."""
    MEASUREMENTS.setdefault(theme, {})[name] = value
    path = ARTIFACTS / "screenshots" / "measurements.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(MEASUREMENTS, indent=2) + "\n")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_or_skip() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def slow_server() -> Iterator[Any]:
    """A reference server that streams one word every 0.1 s."""
    with start_server(engine="echo", delay=0.1) as server:
        yield server


@pytest.fixture(scope="module")
def labs(tmp_path_factory: Any, browser: Any) -> Iterator[tuple[JupyterLab, JupyterLab]]:
    """JupyterLab with kernels, and one without any that shares its notebook signatures: the
    author's own notebooks are trusted there, as when the author opens them again."""
    base = tmp_path_factory.mktemp("browser-ui")
    root = copy_notebooks(NOTEBOOKS, base / "root")
    with lab_and_kernel_less(root, base, shared_data=True) as both:
        yield both


@contextlib.contextmanager
def loaded(browser: Any, lab: JupyterLab, what: str) -> Iterator[LabPage]:
    # Copy writes to the clipboard and the test reads it back.
    context = browser.new_context(
        viewport={"width": 1280, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = LabPage(context.new_page(), lab)
    try:
        with artifacts_on_failure(what, page):
            page.load()
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module", params=list(THEMES))
def theme(request: Any, browser: Any, labs: Any) -> Iterator[tuple[str, LabPage]]:
    """A JupyterLab page in the light, then the dark theme."""
    with loaded(browser, labs[0], f"loading-{request.param}") as page:
        page.set_theme(THEMES[request.param])
        yield request.param, page


@pytest.fixture
def notebook(request: Any, theme: Any, slow_server: Any) -> Iterator[NotebookPage]:
    """A notebook of the test's own, pointed at ``slow_server``."""
    name, page = theme
    path = f"{request.node.originalname}-{name}.ipynb"
    write_notebook(page.lab.root_dir / path)
    with artifacts_on_failure(f"{request.node.name}-setup", page):
        opened = page.open(path)
        opened.run(f"%load_ext aivvm_magic\n%config AivvmMagics.base_url = {slow_server.url!r}")
    yield opened
    opened.shut_down_kernel()
    page.close_current_tab()


def shot(notebook: NotebookPage, name: str, locator: Any = None) -> Path:
    theme = notebook.path.rsplit("-", 1)[1].removesuffix(".ipynb")
    return notebook.lab_page.screenshot(f"{theme}/{name}", locator)


def theme_of(notebook: NotebookPage) -> str:
    return notebook.path.rsplit("-", 1)[1].removesuffix(".ipynb")


def visible_errors(notebook: NotebookPage) -> int:
    """How many "Error displaying widget" messages a reader can see."""
    errors = notebook.page.get_by_text("Error displaying widget")
    return sum(1 for i in range(errors.count()) if errors.nth(i).is_visible())


def type_markdown(notebook: NotebookPage, text: str) -> Any:
    """Run ``%%aivvm`` with ``text``; the cell, while its reply streams."""
    return notebook.run("%%aivvm\n" + text, wait=False)


# -- a cell's reply ---------------------------------------------------------------------------


@keep_artifacts_on_failure
def test_a_reply_looks_the_same_while_it_streams_and_once_it_is_done(notebook):
    notebook.run("%%aivvm\nWarming up the widgets.")
    cell = type_markdown(notebook, REPLY)
    looks = []

    def seen_table_live() -> Any:
        look = cell.evaluate(_LOOK)
        if look:
            looks.append(look)
        return look if look and look["live"] and look["td"] and look["code"] else None

    live = wait_until(seen_table_live, 60, "the live reply to show its table and code", 0.03)
    shot(notebook, "reply-streaming", cell)
    notebook.wait_done(cell)

    def done() -> Any:
        look = cell.evaluate(_LOOK)
        return look if look and not look["live"] else None

    final = wait_until(done, 10, "the static reply")
    shot(notebook, "reply-done", cell)
    for part in ("p", "h2", "td", "code"):
        for key in ("fontSize", "lineHeight", "fontFamily", "x", "y", "width"):
            assert live[part][key] == final[part][key], (part, key, live[part], final[part])
    # Never a paragraph of raw pipes while the table's rows arrived.
    assert not any(look["rawPipes"] for look in looks)
    assert final["text"].strip().endswith("after the code.")
    measured(
        theme_of(notebook),
        "reply text (streaming, done)",
        [
            f"{live['p']['fontSize']} on {live['p']['lineHeight']}",
            f"{final['p']['fontSize']} on {final['p']['lineHeight']}",
        ],
    )


@keep_artifacts_on_failure
def test_a_code_block_is_highlighted_and_copy_and_insert_work(notebook):
    cell = notebook.run("%%aivvm\n```python\n" + CODE + "\n```\n\nThat is all.")
    output = notebook.output(cell)
    block = output.locator(".aivvm-reply div.highlight").first
    block.wait_for()
    assert block.locator("code.language-python").count() == 1
    assert block.locator("span.k").count() >= 1 and block.locator("span.c1").count() == 1
    colours = block.evaluate(
        """(block) => ({
            keyword: getComputedStyle(block.querySelector('span.k')).color,
            name: getComputedStyle(block.querySelector('span.nf')).color,
            background: getComputedStyle(block).backgroundColor,
            page: getComputedStyle(block.closest('.jp-OutputArea-output')).backgroundColor,
            gap: block.nextElementSibling.getBoundingClientRect().top
                 - block.getBoundingClientRect().bottom,
        })"""
    )
    # Coloured by the theme, on a background of its own, with room before the next paragraph.
    assert colours["keyword"] != colours["name"]
    assert colours["background"] not in ("rgba(0, 0, 0, 0)", colours["page"])
    assert colours["gap"] >= 8
    block.hover()
    tools = block.locator(".aivvm-code-tools")
    tools.wait_for()
    shot(notebook, "code-block", output)
    tools.get_by_role("button", name="Copy").click()
    tools.get_by_role("button", name="Copied").wait_for()
    copied = notebook.page.evaluate("navigator.clipboard.readText()")
    assert copied.rstrip("\n") == CODE
    cells_before = notebook.cells.count()
    tools.get_by_role("button", name="Insert as a new cell").click()
    wait_until(lambda: notebook.cells.count() == cells_before + 1, 10, "the new cell")
    # Right below the reply's cell (the second; the first set the magics up).
    inserted = notebook.cells.nth(2).locator(".cm-content").inner_text()
    assert inserted.strip() == CODE
    # Nothing of the tools' own output shows.
    assert visible_errors(notebook) == 0


@keep_artifacts_on_failure
def test_an_interrupt_is_one_line_under_the_partial_reply(notebook):
    paragraphs = "\n\n".join(f"Paragraph {i}." for i in range(120))
    cell = notebook.run(f"%%aivvm\n{paragraphs}", wait=False)
    live = notebook.output(cell).locator(".aivvm-stream")
    live.locator(".aivvm-reply", has_text="Paragraph 45.").wait_for(timeout=60_000)
    # Taller than the view by now; read from its start, its status line stays in sight at the
    # bottom of the view: it is still streaming.
    live.evaluate("(live) => live.scrollIntoView({block: 'start'})")
    notebook.page.wait_for_timeout(200)
    where = live.evaluate(
        """(live) => ({
            top: live.getBoundingClientRect().top,
            reply: live.getBoundingClientRect().height,
            view: window.innerHeight,
            status: live.querySelector('.aivvm-status').getBoundingClientRect().bottom,
            text: live.querySelector('.aivvm-status').innerText,
        })"""
    )
    assert where["reply"] > where["view"] and 0 <= where["top"] < where["view"] / 2, where
    assert where["status"] <= where["view"], where
    assert where["text"].startswith("streaming…")
    shot(notebook, "streaming-long-reply")
    notebook.lab_page.menu("Kernel", "Interrupt Kernel")
    notebook.wait_done(cell)
    output = notebook.output(cell)
    error = output.locator("[data-mime-type='application/vnd.jupyter.stderr']")
    error.wait_for()
    kept = len(output.locator(".aivvm-reply").inner_text().strip())
    lines = error.inner_text().strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"interrupted · partial reply kept \([\d,]+ chars\)", lines[0]
    ), lines
    assert abs(int(re.sub(r"\D", "", lines[0])) - kept) <= 2
    assert "⚠ incomplete" in output.locator(".aivvm-status").inner_text()
    # The end of the output, where the one line is: the page as the user sees it there.
    error.scroll_into_view_if_needed()
    shot(notebook, "interrupt")


@keep_artifacts_on_failure
def test_an_error_is_shown_once(notebook):
    cell = notebook.run("%%aivvm --base-url http://127.0.0.1:9\nAnyone there?")
    output = notebook.output(cell)
    output.locator("[data-mime-type='application/vnd.jupyter.stderr']").wait_for()
    text = output.inner_text()
    assert text.count("refused") == 1, text
    assert "⚠ failed" in output.locator(".aivvm-status").inner_text()
    shot(notebook, "error", output)


# -- the chat panel ---------------------------------------------------------------------------


def open_panel(notebook: NotebookPage) -> tuple[Any, Any]:
    cell = notebook.run("%aivvm panel")
    panel = notebook.output(cell).locator(".aivvm-panel")
    panel.locator(".aivvm-message-input").wait_for()
    return cell, panel


def send_with_enter(notebook: NotebookPage, panel: Any, text: str) -> None:
    box = panel.locator(".aivvm-message-input")
    box.click()
    notebook.page.keyboard.insert_text(text)
    notebook.page.keyboard.press("Enter")


def replies_done(panel: Any, count: int) -> bool:
    return panel.evaluate(
        """(panel, count) => {
            const replies = panel.querySelectorAll('.aivvm-transcript .aivvm-reply');
            return replies.length === count
                && !replies[count - 1].classList.contains('aivvm-live');
        }""",
        count,
    )


@keep_artifacts_on_failure
def test_the_panel_is_a_chat_window(notebook):
    _cell, panel = open_panel(notebook)
    box = panel.locator(".aivvm-message-input")
    # Shift+Enter adds a line; nothing is sent.
    box.click()
    notebook.page.keyboard.insert_text("first line")
    notebook.page.keyboard.press("Shift+Enter")
    notebook.page.keyboard.insert_text("second line")
    assert box.input_value() == "first line\nsecond line"
    assert panel.locator(".aivvm-transcript .aivvm-turn").count() == 0
    # Enter sends: the box empties, the message shows as typed, the reply streams in.
    notebook.page.keyboard.press("Enter")
    assert box.input_value() == ""
    panel.get_by_role("button", name="Queue").wait_for()  # Send says a message would wait
    wait_until(lambda: replies_done(panel, 1), 30, "the first reply")
    panel.get_by_role("button", name="Send").wait_for()
    prompt = panel.locator(".aivvm-prompt blockquote").first
    assert prompt.inner_text() == "first line\nsecond line"
    for n in range(2, 11):
        send_with_enter(notebook, panel, f"message number {n}")
        wait_until(lambda n=n: replies_done(panel, n), 30, f"reply {n}")
    view = panel.locator(".aivvm-transcript-view")
    geometry = view.evaluate(
        """(view) => {
            const prompt = view.querySelector('.aivvm-prompt blockquote');
            const reply = view.querySelector('.aivvm-reply');
            const label = [...document.querySelectorAll('.aivvm-panel .widget-label')]
                .find((l) => l.textContent === 'Temperature');
            return {
                height: view.getBoundingClientRect().height,
                scrollHeight: view.scrollHeight,
                atEnd: view.scrollHeight - view.scrollTop - view.clientHeight,
                panel: view.closest('.aivvm-panel').getBoundingClientRect().height,
                promptFont: getComputedStyle(prompt).fontFamily,
                systemFont: getComputedStyle(
                    document.querySelector('.aivvm-panel .aivvm-system-input textarea')
                ).fontFamily,
                messageFont: getComputedStyle(
                    document.querySelector('.aivvm-panel .aivvm-message-input')
                ).fontFamily,
                promptBackground: getComputedStyle(prompt).backgroundColor,
                replyBackground: getComputedStyle(reply).backgroundColor,
                promptRight: prompt.getBoundingClientRect().right,
                replyLeft: reply.getBoundingClientRect().left,
                promptLeft: prompt.getBoundingClientRect().left,
                lineHeight: getComputedStyle(reply.querySelector('p')).lineHeight,
                fontSize: getComputedStyle(reply.querySelector('p')).fontSize,
                labelCut: label.scrollWidth > label.clientWidth,
            };
        }"""
    )
    # Ten turns in a transcript of its set height, scrolled to the newest.
    assert geometry["height"] <= TRANSCRIPT_HEIGHT + 2, geometry
    assert geometry["scrollHeight"] > geometry["height"] and geometry["atEnd"] <= 2, geometry
    assert panel.locator(".aivvm-turn").last.is_visible()
    # The user's messages stand apart from the replies, in the page's own font.
    assert "mono" not in geometry["promptFont"].lower()
    # What the user writes (a message, the system message) is prose too.
    assert geometry["systemFont"] == geometry["messageFont"] == geometry["promptFont"], geometry
    assert geometry["promptBackground"] != geometry["replyBackground"]
    assert geometry["promptLeft"] > geometry["replyLeft"] + 20
    assert not geometry["labelCut"]
    # The status line says the state; the transcript does not say it again.
    assert "streaming" not in view.inner_text()
    shot(notebook, "panel-ten-turns", panel)
    measured(
        theme_of(notebook),
        "panel with ten turns (transcript px, panel px)",
        [
            round(geometry["height"]),
            round(geometry["panel"]),
        ],
    )
    measured(
        theme_of(notebook),
        "panel reply text",
        f"{geometry['fontSize']} on {geometry['lineHeight']}",
    )


@keep_artifacts_on_failure
def test_the_saved_notebook_shows_the_conversation_to_its_author(notebook, labs):
    _cell, panel = open_panel(notebook)
    for n, text in enumerate(["The first question.", "And a second one."], 1):
        send_with_enter(notebook, panel, text)
        wait_until(lambda n=n: replies_done(panel, n), 30, f"reply {n}")
    notebook.save()
    page = notebook.lab_page

    def shows_transcript(opened: NotebookPage, what: str) -> None:
        turns = opened.panel.locator(".aivvm-turn", has_text="And a second one.")
        wait_until(lambda: any(turns.nth(i).is_visible() for i in range(turns.count())), 30, what)
        opened.page.wait_for_timeout(2500)  # the widget manager gives up on a model in 2 s
        assert visible_errors(opened) == 0
        visible = [turns.nth(i) for i in range(turns.count()) if turns.nth(i).is_visible()]
        assert len(visible) == 1  # the live panel or its static copy, not both

    # The page reloaded, the kernel still running.
    page.page.reload()
    page.page.locator(".jp-Launcher, .jp-NotebookPanel").first.wait_for(timeout=90_000)
    reopened = page.open(notebook.path)
    shows_transcript(reopened, "the transcript after a reload")
    shot(notebook, "saved-after-reload", reopened.panel)

    # The kernel off: opened where no kernel can start, as a trusted notebook of its author.
    notebook.shut_down_kernel()
    wait_until(lambda: not notebook.sessions(), 15, "the kernel to shut down")
    _lab, kernel_less = labs
    with loaded(page.page.context.browser, kernel_less, "kernel-off") as off:
        off.set_theme(THEMES[theme_of(notebook)])
        opened = off.open(notebook.path, kernel=False)
        assert opened.page.evaluate(
            "() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)') !== null"
        )
        shows_transcript(opened, "the transcript with the kernel off")
        path = off.screenshot(f"{theme_of(notebook)}/saved-kernel-off", opened.panel)
        assert path.exists()

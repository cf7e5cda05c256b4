"""Browser test helpers: a JupyterLab server in a subprocess, Chromium, and a notebook driven
with the mouse and keyboard.

Nothing here knows about ``aivvm_magic``; ``tests/test_browser.py`` says what to type and what
to expect. Every wait is bounded, and a failure says where its screenshot went.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat

CHROMIUM = "/usr/bin/chromium"
# Playwright cannot download its own browsers here, so it drives Debian's Chromium; these flags
# keep it from reaching the network or needing a GPU or a sandbox (unavailable in containers).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

#: How long a page may take to load JupyterLab and start a kernel (seconds).
LOAD_TIMEOUT = 90
#: How long one cell may run (seconds).
CELL_TIMEOUT = 60

#: A cell's prompt once it has run: ``[3]:`` (it is ``[*]:`` while it runs, ``[ ]:`` before).
DONE_PROMPT = re.compile(r"\[\d+\]:")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def write_notebook(path: Path, sources: list[str] | None = None) -> Path:
    """Write a notebook of code cells (one empty cell by default) that asks for ``python3``."""
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in (sources or [""])]
    )
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, path)
    return path


class JupyterLab:
    """A JupyterLab server on 127.0.0.1 in a subprocess, isolated from the user's own setup.

    Settings, workspaces and runtime files live under ``state_dir``, so nothing from a
    previous run (an open tab, a trusted-notebook database) leaks in, and nothing is written
    to the home directory. ``kernels=False`` hides every kernel spec: a notebook opened there
    cannot start a kernel, like one opened on a machine without its kernel. ``data_dir`` shares
    another server's data directory, and so its notebook signatures: a notebook saved there is
    trusted here too, as it is when its author opens it again.
    """

    def __init__(
        self,
        root_dir: Path,
        state_dir: Path,
        *,
        kernels: bool = True,
        data_dir: Path | None = None,
    ) -> None:
        self.root_dir = root_dir
        self.state_dir = state_dir
        self.kernels = kernels
        self.data_dir = data_dir or state_dir / "data"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = state_dir / "jupyterlab.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server; :meth:`wait_ready` waits until it answers."""
        settings = self.state_dir / "settings"
        # No news or update checks: they would reach the network and pop up toasts that can
        # cover the buttons a test clicks.
        notification = settings / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        env = dict(os.environ)
        env.update(
            JUPYTER_RUNTIME_DIR=str(self.state_dir / "runtime"),
            JUPYTER_CONFIG_DIR=str(self.state_dir / "config"),
            JUPYTER_DATA_DIR=str(self.data_dir),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.state_dir / "workspaces"),
        )
        # Kernels inherit this environment; the notebooks' own cells say where to connect.
        for name in (
            "AIVVM_BASE_URL",
            "AIVVM_MODEL",
            "AIVVM_API_KEY",
            "AIVVM_PROVIDER",
            "AIVVM_LOCAL_MODEL",
        ):
            env.pop(name, None)
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--IdentityProvider.token={self.token}",
            # CI containers often run as root; the server refuses to start as root otherwise.
            "--ServerApp.allow_root=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if not self.kernels:
            # An allow-list naming no installed kernel spec hides them all.
            command.append("--KernelSpecManager.allowed_kernelspecs=no-kernel-in-this-server")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # Its own process group, so that stop() reaches the server and anything it spawned
            # in that group; on SIGTERM the server also shuts down the kernels it started.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 90) -> None:
        """Poll ``/api/status`` until the server answers; fail early if it exits."""
        deadline = time.monotonic() + timeout
        while True:
            assert self._process is not None, "start() first"
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status", timeout=2)
                return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(f"JupyterLab not ready after {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def url(self, path: str, **query: str) -> str:
        """The address of ``path`` on this server, with the token."""
        params = "&".join([f"token={self.token}", *(f"{k}={v}" for k, v in query.items())])
        return f"{self.base_url}{path}?{params}"

    def api(self, method: str, path: str, timeout: float = 10, **query: str) -> Any:
        """Call the REST API; the decoded JSON answer, or None for an empty one."""
        request = urllib.request.Request(self.url(path, **query), method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernels_running(self) -> list[dict[str, Any]]:
        """The kernels this server runs now."""
        return self.api("GET", "/api/kernels")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server and every kernel it started."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(timeout=5)


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def chromium_or_skip() -> Iterator[Any]:
    """Chromium, through Playwright; the test is skipped (or, in CI, failed) without it."""
    import pytest

    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {message}", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def lab_and_kernel_less(
    root: Path, base: Path, *, shared_data: bool = False
) -> Iterator[tuple[JupyterLab, JupyterLab]]:
    """Two JupyterLab servers on ``root``: with kernels, and without any (sharing the first's
    notebook signatures when ``shared_data``, as its author's own machine would)."""
    lab = JupyterLab(root, base / "lab")
    data_dir = lab.data_dir if shared_data else None
    kernel_less = JupyterLab(root, base / "lab-without-kernels", kernels=False, data_dir=data_dir)
    while kernel_less.port == lab.port:  # two free ports, not the same one twice
        kernel_less.port = free_port()
    try:
        # Both start at once: each takes several seconds.
        lab.start()
        kernel_less.start()
        lab.wait_ready()
        kernel_less.wait_ready()
        yield lab, kernel_less
    finally:
        lab.stop()
        kernel_less.stop()


class LabPage:
    """A browser page with JupyterLab loaded, in a workspace of its own."""

    def __init__(self, page: Any, lab: JupyterLab) -> None:
        self.page = page
        self.lab = lab
        self.console_errors: list[str] = []
        page.on("console", self._on_console)
        page.set_default_timeout(30_000)

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def load(self) -> None:
        """Load JupyterLab; a fresh, reset workspace, so no tab from another run comes back."""
        workspace = f"test-{secrets.token_hex(4)}"
        self.page.goto(
            self.lab.url(f"/lab/workspaces/{workspace}", reset=""), timeout=LOAD_TIMEOUT * 1000
        )
        self.page.locator(".jp-Launcher").first.wait_for(timeout=LOAD_TIMEOUT * 1000)

    @property
    def status_bar(self) -> Any:
        return self.page.locator(".jp-StatusBar-Widget")

    def menu(self, *labels: str) -> None:
        """Click through the main menu, e.g. ``menu("Kernel", "Shut Down Kernel")``."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=labels[0]).first.click()
        for label in labels[1:]:
            self.page.locator(".lm-Menu-itemLabel").filter(
                has_text=re.compile(f"^{re.escape(label)}$")
            ).first.click()

    def open(self, path: str, *, kernel: bool = True) -> NotebookPage:
        """Open the notebook ``path`` with File > Open from Path.

        ``kernel=False`` answers the kernel dialog with "No Kernel" (a JupyterLab without a
        kernel for the notebook asks which one to start).
        """
        self.menu("File", "Open from Path…")
        dialog = self.page.locator(".jp-Dialog")
        dialog.locator("input").fill(path)
        dialog.get_by_role("button", name="Open").click()
        current = self.page.locator(".jp-mod-current .lm-TabBar-tabLabel", has_text=path)
        current.first.wait_for(timeout=LOAD_TIMEOUT * 1000)
        notebook = NotebookPage(self, path)
        notebook.cells.first.wait_for(timeout=LOAD_TIMEOUT * 1000)
        if kernel:
            # The status bar describes the current notebook: its kernel, then its name.
            self.status_bar.filter(
                has_text=re.compile(rf"\| Idle[\s\S]*{re.escape(path)}")
            ).wait_for(timeout=LOAD_TIMEOUT * 1000)
        else:
            self.page.locator(".jp-Dialog").get_by_role("button", name="No Kernel").click(
                timeout=LOAD_TIMEOUT * 1000
            )
            self.status_bar.filter(has_text="No Kernel").wait_for()
        return notebook

    def close_current_tab(self) -> None:
        """Close the current tab, discarding unsaved changes."""
        self.menu("File", "Close Tab")
        discard = self.page.locator(".jp-Dialog").get_by_role("button", name="Discard")
        with contextlib.suppress(Exception):
            discard.click(timeout=2_000)

    def set_theme(self, theme: str) -> None:
        """Switch JupyterLab's theme (``"JupyterLab Light"``, ``"JupyterLab Dark"``) with the
        Settings menu, and wait until the page shows it."""
        self.menu("Settings", "Theme", theme)
        light = "true" if "Light" in theme else "false"
        wait_until(
            lambda: self.page.evaluate("document.body.dataset.jpThemeLight") == light,
            30,
            f"the {theme} theme",
        )
        # The theme's stylesheet is applied a moment after the attribute changes.
        self.page.wait_for_timeout(500)

    def screenshot(self, name: str, locator: Any = None) -> Path:
        """A screenshot under ``test-artifacts/screenshots/`` (of ``locator``, or the page),
        taken on every run so that CI keeps what the UI looked like."""
        path = ARTIFACTS / "screenshots" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        target = locator if locator is not None else self.page
        target.screenshot(path=str(path), timeout=15_000)
        return path

    def save_artifacts(self, name: str) -> Path:
        """A screenshot and the page's HTML under ``test-artifacts/``; the screenshot path."""
        ARTIFACTS.mkdir(exist_ok=True)
        stem = re.sub(r"[^\w.-]+", "_", name)
        screenshot = ARTIFACTS / f"{stem}.png"
        self.page.screenshot(path=str(screenshot), full_page=True, timeout=15_000)
        (ARTIFACTS / f"{stem}.html").write_text(self.page.content())
        (ARTIFACTS / f"{stem}.log").write_text(
            "Browser console errors:\n"
            + "\n".join(self.console_errors)
            + f"\n\nJupyterLab log ({self.lab.log_path}):\n{self.lab.log_tail(200)}\n"
        )
        return screenshot


class NotebookPage:
    """A notebook open in a :class:`LabPage`, used as a person would: click, type, Shift+Enter."""

    def __init__(self, lab_page: LabPage, path: str) -> None:
        self.lab_page = lab_page
        self.page = lab_page.page
        self.lab = lab_page.lab
        self.path = path

    @property
    def panel(self) -> Any:
        """The notebook's panel (the current tab: the only notebook panel shown)."""
        return self.page.locator(".jp-NotebookPanel:visible")

    @property
    def cells(self) -> Any:
        return self.panel.locator(".jp-Cell")

    @property
    def status_bar(self) -> Any:
        return self.lab_page.status_bar

    # -- running cells ------------------------------------------------------------------

    def type_in_last_cell(self, code: str) -> Any:
        """Click into the last cell and type ``code``; return a locator fixed to that cell."""
        index = self.cells.count() - 1
        cell = self.cells.nth(index)
        cell.locator(".cm-content").click()
        # insert_text types the text in one input event: the editor's auto-indent, which
        # would add its own indentation after each newline, stays out of the way.
        self.page.keyboard.insert_text(code)
        return cell

    def run(self, code: str, *, wait: bool = True, timeout: float = CELL_TIMEOUT) -> Any:
        """Type ``code`` into the last cell and press Shift+Enter (which adds a new cell).

        With ``wait``, return once the cell has finished (its prompt shows a number).
        """
        cell = self.type_in_last_cell(code)
        self.page.keyboard.press("Shift+Enter")
        if wait:
            self.wait_done(cell, timeout)
        return cell

    def wait_done(self, cell: Any, timeout: float = CELL_TIMEOUT) -> None:
        """Wait until ``cell`` has run: ``[*]:`` has become ``[n]:``."""
        cell.locator(".jp-InputArea-prompt").filter(has_text=DONE_PROMPT).wait_for(
            timeout=timeout * 1000
        )

    @staticmethod
    def output(cell: Any) -> Any:
        """The output area of ``cell``."""
        return cell.locator(".jp-OutputArea")

    # -- saving and the kernel ----------------------------------------------------------

    def save(self) -> None:
        """Save with the keyboard, as a person would, and wait for the file to be written."""
        before = self.modified()
        self.page.keyboard.press("Escape")  # command mode: the shortcut is the notebook's
        self.page.keyboard.press("Control+s")
        # The tab stops looking unsaved once the server has answered the save request, that
        # is once the file is complete; a change of its time alone could be seen mid-write.
        tab = self.page.locator(".jp-mod-current.lm-TabBar-tab", has_text=self.path).first
        wait_until(
            lambda: (
                "jp-mod-dirty" not in (tab.get_attribute("class") or "")
                and self.modified() != before
            ),
            15,
            f"{self.path} to be saved",
        )

    def modified(self) -> str:
        """When the notebook file was last written."""
        return self.lab.api("GET", f"/api/contents/{self.path}", content="0")["last_modified"]

    def saved_notebook(self) -> Any:
        """The notebook as it is on disk now."""
        return nbformat.reads(
            json.dumps(self.lab.api("GET", f"/api/contents/{self.path}")["content"]),
            as_version=4,
        )

    def sessions(self) -> list[dict[str, Any]]:
        """The server's sessions (notebook to kernel) for this notebook."""
        return [s for s in self.lab.api("GET", "/api/sessions") if s["path"] == self.path]

    def shut_down_kernel(self) -> None:
        """Stop the notebook's kernel through the REST API, whatever the page is doing."""
        for session in self.sessions():
            self.lab.api("DELETE", f"/api/sessions/{session['id']}")


@contextlib.contextmanager
def artifacts_on_failure(name: str, *pages: LabPage) -> Iterator[None]:
    """On an exception, save a screenshot of each page under ``test-artifacts/``.

    The paths are printed and added to the error, so CI output points at them.
    """
    try:
        yield
    except Exception as exc:
        for number, page in enumerate(pages):
            try:
                note = f"screenshot: {page.save_artifacts(f'{name}-{number}')} (HTML, logs beside)"
            except Exception:  # noqa: BLE001 - the original failure matters more
                note = f"no screenshot: {traceback.format_exc(limit=1)}"
            print(note)
            if hasattr(exc, "add_note"):  # Python 3.11+: shown under the error itself
                exc.add_note(note)
        raise


def keep_artifacts_on_failure(test: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a test: on failure, save screenshots of the pages it was given."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        pages: list[LabPage] = []
        for value in kwargs.values():
            page = value.lab_page if isinstance(value, NotebookPage) else value
            if isinstance(page, LabPage) and page not in pages:
                pages.append(page)
        with artifacts_on_failure(test.__name__, *pages):
            return test(*args, **kwargs)

    return wrapper


#: The tutorials, which the browser tests open as a user would.
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def copy_notebooks(source: Path, destination: Path) -> Path:
    """Copy the notebooks of ``source`` (not its Python files) to ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    for notebook in source.glob("*.ipynb"):
        shutil.copy2(notebook, destination / notebook.name)
    return destination

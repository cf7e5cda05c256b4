"""A real Jupyter kernel for tests: execute code as a frontend would and keep every message."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import start_new_kernel

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@dataclass
class Execution:
    """What one execute request produced: the reply and the iopub messages, in order."""

    reply: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    def of_type(self, *kinds: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["msg_type"] in kinds]

    def widget_updates(self) -> list[dict[str, Any]]:
        """The state updates the kernel sent to widgets (``comm_msg`` with method update)."""
        return [
            m for m in self.of_type("comm_msg") if m["content"]["data"].get("method") == "update"
        ]

    def widget_released(self) -> bool:
        """Whether no live widget still holds this reply once the static bundle replaced it.

        Live widgets are pooled: the one that showed this reply waits, emptied, for the next.
        A reply that ended before its widget was shown may never have set the widget at all.
        """
        last_display = max(
            i
            for i, m in enumerate(self.messages)
            if m["msg_type"] in ("display_data", "update_display_data")
        )

        def value(m: dict[str, Any]) -> Any:
            if m["msg_type"] != "comm_msg":
                return None
            return m["content"]["data"].get("state", {}).get("value")

        values = [value(m) for m in self.messages]
        filled = [i for i, v in enumerate(values) if v]
        if not filled:
            return True
        return any(v == "" for v in values[max(filled[-1], last_display) :])

    def final_bundle(self) -> dict[str, Any]:
        """The data of the last display update that is not a widget (the static bundle a saved
        notebook keeps; a reply with code blocks shows its code tools widget after it)."""
        updates = self.of_type("update_display_data", "display_data")
        static = [
            m
            for m in updates
            if "application/vnd.jupyter.widget-view+json" not in m["content"]["data"]
        ]
        return static[-1]["content"]["data"]

    def stdout(self) -> str:
        return "".join(
            m["content"]["text"] for m in self.of_type("stream") if m["content"]["name"] == "stdout"
        )


class Kernel:
    """An ipykernel started with jupyter_client, torn down by ``close()``."""

    def __init__(self) -> None:
        self.manager, self.client = start_new_kernel(kernel_name="python3")

    def execute(
        self,
        code: str,
        *,
        cell_id: str | None = None,
        timeout: float = 60,
        on_message: Any = None,
    ) -> Execution:
        """Run ``code`` like JupyterLab does (with ``cellId`` metadata) and collect its output.

        ``on_message(msg)`` is called for each iopub message as it arrives (to interrupt, say).
        """
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        metadata = {"cellId": cell_id} if cell_id else {}
        msg = self.client.session.msg("execute_request", content, metadata=metadata)
        self.client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        deadline = time.monotonic() + timeout
        collected: list[dict[str, Any]] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no idle status within {timeout} s for {code[:60]!r}")
            try:
                message = self.client.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") != msg_id and message["msg_type"] not in (
                "comm_msg",
                "comm_open",
                "comm_close",
            ):
                continue
            if on_message is not None:
                on_message(message)
            if message["msg_type"] == "status":
                if message["content"]["execution_state"] == "idle":
                    break
                continue
            collected.append(message)
        # Skip other replies on the shell channel: a busy machine makes start-up send more
        # than one kernel_info request, and their replies must not pass for this one.
        while True:
            reply = self.client.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                return Execution(reply, collected)

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

"""Conversations on disk: the JSON and Markdown export formats, and atomic writes.

Everything here works on the plain data of :meth:`Conversation.to_dict`, so it needs no
conversation object. Both formats round-trip exactly: what :func:`write_json` and
:func:`write_markdown` write, :func:`read` reads back unchanged, for any text. Writes go to a
temporary file beside the target, which replaces it only once complete, so a crash mid-write
leaves the old file. The standard library and :mod:`aivvm_magic.token_usage` only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TextIO

from ..token_usage import TokenUsage

#: The ``"format"`` value of an exported conversation.
FORMAT = "aivvm-conversation"
#: The export format version this module writes. Version 2 added each turn's provider, finish
#: reason and token counts; version 1 files are still read (those fields then are None).
VERSION = 2
#: The versions it reads.
READABLE_VERSIONS = (1, 2)
#: The fast one-shot JSON encoder (json.dump with an indent runs the slow pure-Python one).
JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def type_name(value: object) -> str:
    return type(value).__name__


class ConversationFormatError(ValueError):
    """A turn, a conversation dict or a file is not a valid aivvm conversation; shown as is."""


def json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type_name(value)}"


def check_format_and_version(data: Mapping[str, Any]) -> int:
    """The export format version of ``data``; ConversationFormatError unless it is one this
    module reads."""
    if data.get("format") != FORMAT:
        if "nbformat" in data and "cells" in data:
            raise ConversationFormatError("a Jupyter notebook, not an aivvm conversation")
        raise ConversationFormatError(
            f'not an aivvm conversation (no "format": "{FORMAT}" at the top)'
        )
    version = data.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise ConversationFormatError(
            f"unsupported version {version!r}; this aivvm_magic reads versions {readable}"
        )
    return version


def format_of(path: str | os.PathLike[str]) -> Literal["json", "md"]:
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".json":
        return "json"
    if suffix == ".md":
        return "md"
    raise ValueError(
        f"cannot tell the format of {os.fspath(path)!r} from its extension; use .json or .md"
    )


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConversationFormatError(
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "truncated or corrupt?"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ConversationFormatError(f"not valid JSON ({exc})") from None


# --------------------------------------------------------------------------------------------
# Atomic writes


def write_atomically(path: str | os.PathLike[str], write: Callable[[TextIO], None]) -> None:
    """Have ``write`` fill a new file, then put it in place of ``path`` in one step.

    The text goes to a temporary file beside the target (``os.replace`` is only atomic within
    one file system), is flushed and fsynced, then renamed over the target. If anything fails
    the temporary file is removed and the old file is left exactly as it was.
    """
    # Write through a symlink to its target rather than replacing the link with a file.
    target = os.path.realpath(os.fspath(path))
    directory, basename = os.path.split(target)
    temporary = os.path.join(directory, f".{basename}.{secrets.token_hex(6)}.tmp")
    # 0o666 lets the umask decide, as for any new file (mkstemp would force 0o600).
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
    )
    try:
        try:
            file = open(fd, "w", encoding="utf-8", newline="")
        except BaseException:
            os.close(fd)
            raise
        with file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):
            # Overwriting keeps the old file's permissions.
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not possible on every platform, and not essential.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Markdown
#
# A transcript reads as ordinary Markdown; the exact data rides in one-line HTML comments:
#
#     <!-- aivvm:conversation {"format", "version", "name", "has_system", "turns": N} -->
#     <!-- aivvm:system {"chars": N} -->        followed by exactly N characters, then "\n"
#     <!-- aivvm:turn {every field but prompt and reply} -->
#     <!-- aivvm:prompt {"chars": N} -->        likewise
#     <!-- aivvm:reply {"chars": N} -->         likewise
#
# The reader finds each marker by searching from the end of the previous text, so the prose
# between markers must never contain "<!-- aivvm:". It cannot: the prose is escaped, with "<"
# written "&lt;", and the JSON in markers has "<" and ">" written as \u escapes, which also
# keeps a "-->" inside a value from ending the comment early.

_MARK = "<!-- aivvm:"
_MARK_END = " -->"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
# Anything _md_inline changes: Markdown specials, HTML's, and what str.splitlines() splits on.
_MD_UNSAFE = re.compile(r"[\\`*_\[\]#|~&<>\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
# How the writer spells a text's marker; the reader takes this fast path before trying JSON.
_BLOCK_MARKER = re.compile(r'<!-- aivvm:(\w+) \{"chars": (\d+)\} -->\n')


def _marker(kind: str, payload: object) -> str:
    text = JSON_ENCODER.encode(payload).replace("<", "\\u003c").replace(">", "\\u003e")
    return f"{_MARK}{kind} {text}{_MARK_END}\n"


def _block(kind: str, text: str) -> str:
    # A text that leaves a code fence open would turn the rest of the rendered transcript into
    # code; close it after the text, where the reader does not look.
    fence = _open_fence(text)
    closing = f"{fence}\n\n" if fence else ""
    return f'{_MARK}{kind} {{"chars": {len(text)}}}{_MARK_END}\n{text}\n\n{closing}'


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _open_fence(text: str) -> str | None:
    """The code fence a Markdown reader is still inside at the end of ``text``, if any."""
    if "```" not in text and "~~~" not in text:
        return None
    fence = None
    for line in _LINE_BREAK.split(text):
        match = _FENCE.match(line)
        if match is None:
            continue
        run, rest = match.groups()
        if fence is None:
            # A backtick fence's info string cannot contain backticks (that is inline code).
            if not (run[0] == "`" and "`" in rest):
                fence = run
        elif run[0] == fence[0] and len(run) >= len(fence) and not rest.strip():
            fence = None
    return fence


def _md_inline(text: str) -> str:
    """``text`` as inline Markdown that shows as written: one line, specials escaped."""
    if _MD_UNSAFE.search(text) is None:
        return text
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(_MD_SPECIAL.sub(r"\\\1", text).splitlines())


def _md_summary(turn: Mapping[str, Any]) -> str:
    where = f"cell {_md_inline(turn['cell_id'])}" if turn["cell_id"] else turn["source"]
    provider = f" via {_md_inline(turn['provider'])}" if turn.get("provider") else ""
    parts = [
        f"Model: {_md_inline(turn['model'])}{provider}",
        f"temperature {turn['temperature']:g}",
        f"started {_md_inline(turn['started'])}",
        f"{turn['duration']:.1f} s",
        f"from {where}",
    ]
    # A turn's counts have the names of OpenAI's usage object.
    usage = TokenUsage.from_openai(turn)
    if usage is not None:
        parts.append(usage.summary())
    if not turn["complete"]:
        reason = f": {_md_inline(turn['error'])}" if turn["error"] else ""
        parts.append(f"**partial reply**{reason}")
    return " · ".join(parts)


def markdown_parts(data: Mapping[str, Any]) -> Iterator[str]:
    header = {
        "format": data["format"],
        "version": data["version"],
        "name": data["name"],
        "has_system": data["system"] is not None,
        "turns": len(data["turns"]),
    }
    yield f"# Conversation: {_md_inline(data['name'])}\n\n"
    yield _marker("conversation", header)
    yield "\n"
    if data["system"] is not None:
        yield "**System message**\n\n"
        yield _block("system", data["system"])
    for number, turn in enumerate(data["turns"], 1):
        metadata = {key: value for key, value in turn.items() if key not in ("prompt", "reply")}
        yield "".join(
            (
                f"## Turn {number}\n\n{_md_summary(turn)}\n\n",
                _marker("turn", metadata),
                "\n### You\n\n",
                _block("prompt", turn["prompt"]),
                "### Assistant\n\n",
                _block("reply", turn["reply"]),
            )
        )


class _MarkdownReader:
    """Reads the markers and texts of an exported transcript in order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def marker(self, kind: str, what: str) -> Any:
        start = self.text.find(_MARK, self.position)
        if start < 0:
            raise ConversationFormatError(f"{what} is missing; the file looks truncated")
        end = self.text.find("\n", start)
        line = self.text[start:] if end < 0 else self.text[start:end]
        if end < 0 or not line.endswith(_MARK_END):
            raise ConversationFormatError(f"{what} has a damaged marker")
        found, _, payload = line[len(_MARK) : -len(_MARK_END)].partition(" ")
        if found != kind:
            raise ConversationFormatError(f"expected {what}, found an aivvm:{found} marker")
        try:
            value = json.loads(payload)
        except (ValueError, RecursionError):
            raise ConversationFormatError(f"{what} has a damaged marker") from None
        self.position = end + 1
        return value

    def block(self, kind: str, what: str) -> str:
        found = self.text.find(_MARK, self.position)
        match = _BLOCK_MARKER.match(self.text, found) if found >= 0 else None
        if match is not None and match.group(1) == kind:
            chars = int(match.group(2))
            self.position = match.end()
        else:
            # Not as the writer spells it: marker() says what is wrong, or it is damaged.
            info = self.marker(kind, what)
            chars = info.get("chars") if isinstance(info, dict) else None
            if type(chars) is not int or chars < 0 or len(info) != 1:
                raise ConversationFormatError(f"{what} has a damaged marker")
        start, stop = self.position, self.position + chars
        if stop >= len(self.text) or self.text[stop] != "\n":
            raise ConversationFormatError(
                f"{what} does not match its recorded length (edited or truncated?)"
            )
        self.position = stop + 1
        return self.text[start:stop]

    def at_end(self) -> bool:
        return self.text.find(_MARK, self.position) < 0


def parse_markdown(text: str) -> dict[str, Any]:
    if _MARK + "conversation " not in text:
        raise ConversationFormatError(
            "not an aivvm conversation (no aivvm:conversation marker; a Markdown export "
            "starts with one)"
        )
    reader = _MarkdownReader(text)
    header = reader.marker("conversation", "the conversation header")
    if not isinstance(header, dict):
        raise ConversationFormatError("the conversation header has a damaged marker")
    check_format_and_version(header)
    name, has_system, count = header.get("name"), header.get("has_system"), header.get("turns")
    if not isinstance(has_system, bool) or type(count) is not int or count < 0:
        raise ConversationFormatError("the conversation header has a damaged marker")
    system = reader.block("system", "the system message") if has_system else None
    turns: list[dict[str, Any]] = []
    for number in range(1, count + 1):
        metadata = reader.marker("turn", f"turn {number}")
        if not isinstance(metadata, dict) or "prompt" in metadata or "reply" in metadata:
            raise ConversationFormatError(f"turn {number} has a damaged marker")
        prompt = reader.block("prompt", f"the prompt of turn {number}")
        reply = reader.block("reply", f"the reply of turn {number}")
        turns.append({"prompt": prompt, "reply": reply, **metadata})
    if not reader.at_end():
        raise ConversationFormatError(f"more turns than the {count} its header announces")
    return {
        "format": header["format"],
        "version": header["version"],
        "name": name,
        "system": system,
        "turns": turns,
    }


# --------------------------------------------------------------------------------------------
# Whole files


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write a conversation's ``data`` to ``path`` as UTF-8 JSON, replacing it atomically."""
    encode = JSON_ENCODER.encode

    def write(file: TextIO) -> None:
        # One turn to a line: readable, diffable, and each line comes from the fast
        # one-shot encoder (json.dump with an indent runs the slow pure-Python one).
        file.write("{\n")
        for key in ("format", "version", "name", "system"):
            file.write(f" {encode(key)}: {encode(data[key])},\n")
        file.write(' "turns": [')
        for index, turn in enumerate(data["turns"]):
            file.write(("\n  " if index == 0 else ",\n  ") + encode(turn))
        file.write("\n ]\n}\n" if data["turns"] else "]\n}\n")

    write_atomically(path, write)


def write_markdown(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write a conversation's ``data`` to ``path`` as a Markdown transcript, atomically."""

    def write(file: TextIO) -> None:
        for part in markdown_parts(data):
            file.write(part)

    write_atomically(path, write)


def read(path: str | os.PathLike[str]) -> Any:
    """The data of the ``.json`` or ``.md`` export at ``path``, not yet checked as a whole.

    :class:`ConversationFormatError` names the file when it is not text in either format; a
    missing file raises the usual ``OSError``.
    """
    kind = format_of(path)
    with open(path, "rb") as file:
        raw = file.read()
    try:
        try:
            # utf-8-sig: some editors put a byte-order mark in front when saving.
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConversationFormatError("not UTF-8 text (a binary file?)") from None
        if not text.strip():
            raise ConversationFormatError("the file is empty")
        return parse_json(text) if kind == "json" else parse_markdown(text)
    except ConversationFormatError as exc:
        raise ConversationFormatError(f"{os.fspath(path)}: {exc}") from None

"""Checks that HTML shown to a browser holds nothing that runs or fetches on its own.

The HTML is walked with the standard library's parser, so assertions are about the elements and
attributes a browser would build, not about substrings of the markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from aivvm_magic.rendering.assets import saved_output_style
from aivvm_magic.rendering.markdown import ALLOWED_TAGS


@dataclass
class Element:
    """One start tag as a browser would see it: name and (unescaped) attributes."""

    tag: str
    attrs: dict[str, str | None]


@dataclass
class ParsedHTML:
    """The elements and visible text of an HTML fragment."""

    elements: list[Element] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> list[Element]:
        return [element for element in self.elements if element.tag == tag]

    @property
    def tags(self) -> set[str]:
        return {element.tag for element in self.elements}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.result = ParsedHTML()
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.result.elements.append(Element(tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def close(self) -> None:
        super().close()
        self.result.text = "".join(self._text)


def parse(html: str) -> ParsedHTML:
    """Parse ``html`` with :class:`html.parser.HTMLParser`."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.result


# Schemes are compared the way a browser reads them: ASCII tab/newline removed, leading
# control characters and spaces stripped, case folded.
def _scheme(url: str) -> str | None:
    cleaned = re.sub(r"[\t\n\r]", "", url).lstrip("\x00 \x01\x02\x03\x04\x05\x06\x07\x08")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", cleaned)
    return match.group(1).lower() if match else None


def assert_safe(html: str, extra_tags: frozenset[str] = frozenset()) -> ParsedHTML:
    """Assert that ``html`` holds nothing a browser would execute or fetch on its own.

    ``extra_tags`` are tags the package's own wrapper markup may add (``div`` around a reply).
    The one stylesheet a saved output may carry is the package's own, fixed one
    (``saved_output_style``): it is taken out first, and any other ``<style>`` fails.
    """
    html = html.replace(saved_output_style(), "")
    lowered = html.lower()
    for marker in ("<script", "<iframe", "<svg", "<style", "<img", "<object", "<embed"):
        assert marker not in lowered, f"{marker!r} in {html!r}"
    parsed = parse(html)
    assert parsed.tags <= ALLOWED_TAGS | extra_tags, parsed.tags - ALLOWED_TAGS
    for element in parsed.elements:
        for name, value in element.attrs.items():
            assert not name.startswith("on"), (element, html)
            assert name not in ("style", "src", "srcdoc", "formaction", "action"), element
            if name == "href":
                assert value is not None
                assert _scheme(value) in ("http", "https", "mailto"), element
                assert "javascript:" not in value.lower()
    assert not re.search(r"<[^>]*\son\w+\s*=", html, re.IGNORECASE), html
    return parsed

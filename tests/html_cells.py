"""A tiny reader of the dashboard's HTML (stdlib ``html.parser``): every element with its
attributes and its text, so a test finds a cell by its ``data-*`` attributes and compares its
text with the admin API's number."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr", "rect"}  # fmt: skip


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())

    def within(self, other: Element) -> bool:
        node: Element | None = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False


class Page(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1] if self.stack else None
        element = Element(tag, {k: v or "" for k, v in attrs}, parent)
        self.elements.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.parts.append(data)

    def all(self, within: Element | None = None, **attrs: str) -> list[Element]:
        """Elements with these attributes (``data_plan="pro"`` is ``data-plan="pro"``)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [
            e for e in self.elements
            if all(e.attrs.get(k) == v for k, v in wanted.items())
            and (within is None or (e is not within and e.within(within)))
        ]  # fmt: skip

    def having(self, name: str, within: Element | None = None) -> list[Element]:
        """Elements with the attribute ``name`` (any value), in document order."""
        return [
            e for e in self.elements
            if name in e.attrs and (within is None or (e is not within and e.within(within)))
        ]  # fmt: skip

    def one(self, within: Element | None = None, **attrs: str) -> Element:
        found = self.all(within, **attrs)
        assert len(found) == 1, (attrs, len(found))
        return found[0]

    def cell(self, row: Element, name: str) -> str:
        """The text of ``row``'s ``data-field=name`` cell, without the dollar sign."""
        text = self.one(row, data_field=name).text.split()[0]
        return "-" + text[2:] if text.startswith("-$") else text.removeprefix("$")

"""A page's layout, as the browser laid it out: the boxes of the landmarks of its main
content (headings, tables, forms, charts, figures, fact lists), each named by its id
when the id is a fixed word and by its place among its kind otherwise (run and site ids
change between runs).

Compared to a stored layout, every stored landmark must still be there and visible, in
the same order down the page, at the same left edge and width (± ``TOLERANCE_PX``), and
at least half as tall; ``main`` itself at least half as tall. Landmarks the stored layout
lacks are allowed (more data, more rows), so a page fails when it lost content or its
columns moved, not when the fleet grew. ``FEDGE_UPDATE_LAYOUTS=1`` rewrites the stored
layouts from the current pages (then review the diff)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, ViewportSize

__all__ = ["STORED", "TOLERANCE_PX", "VIEWPORT", "compare", "layout", "matches_stored"]

STORED = Path(__file__).with_name("layouts")
TOLERANCE_PX = 24
VIEWPORT = ViewportSize(width=1280, height=900)

_COLLECT = """() => {
  const main = document.querySelector("main");
  if (!main) return null;
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: Math.round(r.x), y: Math.round(r.y + window.scrollY),
            w: Math.round(r.width), h: Math.round(r.height)}; };
  const seen = {};
  const marks = [];
  for (const el of main.querySelectorAll("h1, h2, h3, table, form, svg, figure, dl")) {
    const tag = el.tagName.toLowerCase();
    const n = seen[tag] = (seen[tag] ?? -1) + 1;
    const key = /^[a-z]+(-[a-z]+)*$/.test(el.id) ? `${tag}#${el.id}` : `${tag}[${n}]`;
    const style = getComputedStyle(el);
    const visible = style.visibility !== "hidden" && style.display !== "none"
      && el.getClientRects().length > 0;
    marks.push({key, visible, ...box(el)});
  }
  return {main: box(main), marks};
}"""


def layout(page: Page) -> dict[str, Any]:
    """The current page's main box and landmarks."""
    shape: dict[str, Any] | None = page.evaluate(_COLLECT)
    if shape is None:
        return {"main": {"x": 0, "y": 0, "w": 0, "h": 0}, "marks": []}
    return shape


def compare(stored: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs, one line each; empty when the page keeps the stored layout."""
    wrong: list[str] = []
    if actual["main"]["h"] < _tall(stored["main"]) / 2:
        wrong.append(f"main: {actual['main']['h']} px tall, stored {stored['main']['h']}")
    found = {m["key"]: (i, m) for i, m in enumerate(actual["marks"])}
    last = -1
    for want in stored["marks"]:
        key = want["key"]
        if key not in found:
            wrong.append(f"{key}: missing")
            continue
        place, got = found[key]
        if want["visible"] and not got["visible"]:
            wrong.append(f"{key}: hidden")
        if place < last:
            wrong.append(f"{key}: out of order")
        last = max(last, place)
        for edge in ("x", "w"):
            if abs(got[edge] - want[edge]) > TOLERANCE_PX:
                wrong.append(f"{key}: {edge} {got[edge]}, stored {want[edge]}")
        if got["h"] < _tall(want) / 2:
            wrong.append(f"{key}: {got['h']} px tall, stored {want['h']}")
    return wrong


def _tall(box: dict[str, Any]) -> int:
    """A stored height, capped at one screen: a long table (the audit) is as long as its
    data, and a page with less data is not broken, only shorter."""
    return min(int(box["h"]), VIEWPORT["height"])


def matches_stored(name: str, page: Page) -> list[str]:
    """Compare ``page`` to the stored layout ``name`` (or store it, when updating)."""
    path = STORED / f"{name}.json"
    shape = layout(page)
    if os.environ.get("FEDGE_UPDATE_LAYOUTS") == "1":
        path.write_text(json.dumps(shape, indent=1) + "\n")
        return []
    return compare(json.loads(path.read_text()), shape)

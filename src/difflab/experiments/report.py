"""A self-contained HTML report: plain HTML with inline CSS and base64-embedded PNGs, so the
single file can be handed in, mailed or opened offline.

To check that it renders, screenshot it with headless Chromium (Debian's `chromium`):

    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --user-data-dir=$(mktemp -d) \
        --screenshot=/tmp/report.png --window-size=1200,3000 file:///path/to/report.html
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

MIN_DISPLAY_WIDTH = 256  # pixels; a 2x2 grid of 16 px samples is otherwise a speck
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption, .note { color: #555; font-size: .9em; }
pre, code { background: #f6f6f6; padding: .1em .3em; }
pre { padding: .6em; overflow-x: auto; }
"""


@dataclass
class Section:
    """One titled part of the report; `body` is HTML."""

    title: str
    body: str

    @property
    def anchor(self) -> str:
        return "-".join(self.title.lower().split())


def png_data_uri(image: Image.Image | str | Path) -> str:
    """A PIL image or PNG file as a data: URI (files are re-encoded, so any format works)."""
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure(image: Image.Image | str | Path, caption: str, how: str | None = None) -> str:
    """An embedded image with its caption and, optionally, the command that remakes it.
    Small images are shown enlarged (pixelated, see STYLE) to at least MIN_DISPLAY_WIDTH."""
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    width = image.width * max(1, -(-MIN_DISPLAY_WIDTH // image.width))
    remake = f"<br><code>{html.escape(how)}</code>" if how else ""
    return (f'<figure><img src="{png_data_uri(image)}" width="{width}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}{remake}</figcaption></figure>")


def collapsed(summary: str, body: str) -> str:
    """Detail a reader may open (collapsed in print and screenshots)."""
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def bullet_list(lines: Sequence[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def paragraph(text: str, css_class: str | None = None) -> str:
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<p{attribute}>{html.escape(text)}</p>"


def command(text: str) -> str:
    """A shell command the reader can copy."""
    return f"<pre><code>{html.escape(text)}</code></pre>"


def table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]]) -> str:
    """A table (header None: rows only); cells that look numeric are right-aligned."""
    def cell(value: Any) -> str:
        text = str(value)
        numeric = text.replace(",", "").replace(".", "", 1).replace("×", "").replace("%", "").lstrip("-").isdigit()
        return f'<td class="number">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in header or ())
    body = "".join("<tr>" + "".join(cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{body}</tbody></table>"


def render_report(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    contents = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    parts = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{paragraph(subtitle, 'note')}"
            f"<nav><ol>{contents}</ol></nav>{parts}</body></html>\n")

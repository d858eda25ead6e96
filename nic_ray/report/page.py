"""One self-contained HTML page: sections of text, tables and figures, images inline.

A report opens from a file, an S3 browser or an e-mail attachment: every picture is a PNG in a
``data:`` URI, the style sheet is in the page, and nothing is fetched when it is shown. Full-size
files beside the page are reached by relative links only.
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass, field

import jinja2
import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt

from nic_ray.tables import write_bytes


@dataclass
class Image:
    """A picture: matplotlib figure or PNG bytes, inline; ``link`` a full-size file beside the page."""

    uri: str
    caption: str = ""
    link: str | None = None
    wide: bool = False  # the page's whole width


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    id: str = ""


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)


def figure_image(fig: plt.Figure, caption: str = "", wide: bool = False, dpi: int = 90) -> Image:
    """``fig`` as an inline PNG (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return png_image(buffer.getvalue(), caption, wide=wide)


def png_image(png: bytes, caption: str = "", link: str | None = None, wide: bool = False) -> Image:
    return Image("data:image/png;base64," + base64.b64encode(png).decode(), caption, link, wide)


def cell(value) -> str:
    """A table cell: floats to 3 significant places, missing values as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("nic_ray.report", "."), autoescape=True, undefined=jinja2.StrictUndefined
).get_template("page.html.j2")


def write_page(url: str, title: str, subtitle: str, sections: list[Section]) -> str:
    """Render the page to ``url`` (local or s3://); return ``url``."""
    html = _TEMPLATE.render(
        title=title, subtitle=subtitle, sections=sections, written=time.strftime("%Y-%m-%d %H:%M"), cell=cell
    )
    write_bytes(url, html.encode())
    return url

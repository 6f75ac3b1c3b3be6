"""Login cards: the QR code for a login code, and an A4 sheet of cards to print, cut out and glue in."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

import segno

QUIET_ZONE = 4  # modules, the minimum the QR standard asks for
QR_SIZE_MM = 35
QR_TITLE = "QR login code"
CARDS_PER_PAGE = 8  # 2 columns x 4 rows


def make_qr(code: str) -> segno.QRCode:
    """A standard QR code (never Micro QR), error correction M, in the compact alphanumeric mode."""
    return segno.make_qr(code, error="m", boost_error=False, mode="alphanumeric")


def qr_svg(code: str) -> str:
    """The QR code for `code` as an inline <svg>, about 3.5 cm wide when printed."""
    out = io.BytesIO()
    make_qr(code).save(
        out,
        kind="svg",
        xmldecl=False,
        nl=False,
        scale=1,
        border=QUIET_ZONE,
        omitsize=True,
        dark="#000",
        light="#fff",
        title=QR_TITLE,
        svgclass="login-qr",
        lineclass="login-qr-modules",
    )
    # segno's fractional scales leave the white background a module short, so draw one unit
    # per module and give the printed size here.
    return (
        out.getvalue()
        .decode("utf-8")
        .replace("<svg ", f'<svg width="{QR_SIZE_MM}mm" height="{QR_SIZE_MM}mm" ', 1)
    )


@dataclass(frozen=True, slots=True)
class CardView:
    first_name: str
    surname: str
    username: str
    class_name: str | None
    code: str
    expires_at: datetime


_STYLE = """
@page { size: A4; margin: 10mm; }
* { box-sizing: border-box; }
body { margin: 0; font-family: Verdana, Arial, sans-serif; color: #000; }
.screen-note { margin: 0 0 6mm; padding: 3mm 4mm; background: #fff8d6; border: 1px solid #d9c46a; }
.page { display: grid; grid-template-columns: repeat(2, 95mm); grid-template-rows: repeat(4, 69mm);
  break-after: page; }
.page:last-of-type { break-after: auto; }
.card { display: flex; align-items: center; gap: 4mm; padding: 5mm; overflow: hidden; break-inside: avoid;
  border-right: 0.3mm dashed #777; border-bottom: 0.3mm dashed #777; }
.card:nth-child(odd) { border-left: 0.3mm dashed #777; }
.card:nth-child(-n+2) { border-top: 0.3mm dashed #777; }
.card-text { flex: 1; min-width: 0; overflow-wrap: anywhere; }
.card-text .name { margin: 0 0 3mm; font-size: 18pt; font-weight: bold; line-height: 1.15; }
.card-text p { margin: 0 0 1.5mm; font-size: 10pt; }
.username { font-family: "Courier New", monospace; font-size: 12pt; font-weight: bold; }
.card-text .school { margin-top: 3mm; font-size: 8pt; color: #444; }
.login-qr { flex: none; width: 35mm; height: 35mm; }
.empty { font-size: 14pt; }
@media screen {
  body { padding: 10mm; background: #eee; }
  .page { width: 190mm; margin: 0 auto 10mm; background: #fff; }
}
@media print { .screen-note { display: none; } }
"""


def login_card_sheet(cards: Sequence[CardView], *, school_name: str, title: str) -> str:
    """A self-contained HTML page of login cards laid out for A4, ready for the browser's print."""
    if cards:
        note = (
            '<p class="screen-note">Print this page (Ctrl+P), then cut along the dashed lines. '
            "Print at 100% scale (no \u201cfit to page\u201d), so the QR codes scan reliably.</p>"
        )
        pages = [cards[i : i + CARDS_PER_PAGE] for i in range(0, len(cards), CARDS_PER_PAGE)]
        body = note + "".join(
            '<section class="page">' + "".join(_card(card, school_name) for card in page) + "</section>"
            for page in pages
        )
    else:
        body = '<p class="empty">There are no login cards to print.</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _card(card: CardView, school_name: str) -> str:
    day = card.expires_at.date()
    class_line = "" if card.class_name is None else f"<p>Class: {escape(card.class_name)}</p>"
    return (
        '<article class="card"><div class="card-text">'
        f'<p class="name">{escape(card.first_name)} {escape(card.surname)}</p>'
        f'<p>Username: <span class="username">{escape(card.username)}</span></p>'
        f"{class_line}"
        f'<p>Valid until <time datetime="{day.isoformat()}">{day.day} {day:%B %Y}</time></p>'
        f'<p class="school">{escape(school_name)}</p>'
        f"</div>{qr_svg(card.code)}</article>"
    )

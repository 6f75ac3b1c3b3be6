"""In a real browser (Debian's headless Chromium): GraphiQL as served by Rollcall, and the login-card sheet as
printed to PDF. Both need nothing from the internet."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import zxingcpp
from PIL import Image

from db.engine import Database
from db.models import UserType
from tests.browser import Page, browser, need, print_to_pdf, run
from tests.conftest import SchoolFixture, graphql, make_user, sign_in_as
from tests.qr import make_class

pytestmark = pytest.mark.slow

QUERY_EDITOR = "document.querySelector('.graphiql-query-editor .CodeMirror')"
RESPONSE = "document.querySelector('.result-window .CodeMirror')"
RUN = "document.querySelector('.graphiql-execute-button')"
LOGIN_WITH_QR = "mutation ($code: String!) { loginWithQr(code: $code) { user { username } errors { code } } }"


async def run_in_graphiql(page: Page, query: str) -> dict[str, object]:
    """Types `query` into GraphiQL's editor, presses the run button and reads the answer GraphiQL shows."""
    await page.wait_for(f"{QUERY_EDITOR} && {RUN} && !{RUN}.disabled")
    await page.evaluate(f"{QUERY_EDITOR}.CodeMirror.setValue({json.dumps(query)})")
    await page.evaluate(f"{RUN}.click()")
    shown = await page.wait_for(f"{RESPONSE} && {RESPONSE}.CodeMirror.getValue()")
    answer: dict[str, object] = json.loads(shown)
    return answer


def assert_nothing_failed(page: Page, origin: str) -> None:
    """Every request went to Rollcall itself and succeeded; no script error, no refused content."""
    requested = [r["request"]["url"] for r in page.of("Network.requestWillBeSent")]
    assert requested, "the page made no request"
    elsewhere = [url for url in requested if not url.startswith((origin, "data:"))]
    assert elsewhere == [], f"requests leaving Rollcall: {elsewhere}"
    failed = [(f["type"], f["errorText"]) for f in page.of("Network.loadingFailed")]
    assert failed == []
    refused = [
        (r["response"]["url"], r["response"]["status"])
        for r in page.of("Network.responseReceived")
        if r["response"]["status"] >= 400
    ]
    assert refused == []
    errors = [e["entry"]["text"] for e in page.of("Log.entryAdded") if e["entry"]["level"] == "error"]
    assert errors == [], errors
    thrown = [e["exceptionDetails"].get("text") for e in page.of("Runtime.exceptionThrown")]
    assert thrown == []


async def test_graphiql_loads_from_rollcall_and_runs_a_query_for_a_signed_in_admin(
    server_url: str, school: SchoolFixture, tmp_path: Path
) -> None:
    # given a browser signed in as the school's admin (its session cookie)
    async with browser(tmp_path / "profile") as page:
        await page.send(
            "Network.setCookie",
            name="rollcall_session",
            value=school.admin_token,
            url=server_url,
            httpOnly=True,
            sameSite="Lax",
        )

        # when it opens /graphql and runs { me { username } }
        await page.navigate(f"{server_url}/graphql")
        answer = await run_in_graphiql(page, "{ me { username } }")
        await page.screenshot(tmp_path / "graphiql.png")

    # then GraphiQL shows the admin, and every file it needed came from Rollcall
    assert answer == {"data": {"me": {"username": "admin"}}}
    assert_nothing_failed(page, server_url)
    scripts = sorted(
        urlsplit(r["response"]["url"]).path
        for r in page.of("Network.responseReceived")
        if r["type"] == "Script"
    )
    assert scripts == ["/static/graphiql/graphiql.bundle.js", "/static/graphiql/rollcall-graphiql.js"]
    (document,) = [r["response"] for r in page.of("Network.responseReceived") if r["type"] == "Document"]
    assert "script-src 'self';" in document["headers"]["content-security-policy"]
    # the query went with the CSRF header a cookie-signed request needs (else it is refused, 403, above)
    posts = [r["request"] for r in page.of("Network.requestWillBeSent") if r["request"]["method"] == "POST"]
    assert posts and all(r["headers"].get("x-rollcall-csrf") for r in posts)


async def test_graphiql_works_with_a_pasted_bearer_token(
    server_url: str, db: Database, school: SchoolFixture, tmp_path: Path
) -> None:
    # given a browser with no session and a teacher's token
    teacher = await make_user(db, school, type=UserType.TEACHER, username="jo.hill")
    token = await sign_in_as(db, school, teacher)

    async with browser(tmp_path / "profile") as page:
        await page.navigate(f"{server_url}/graphql")
        await page.wait_for(f"{QUERY_EDITOR} && {RUN} && !{RUN}.disabled")

        # when the token is pasted into the Headers tab and the query run
        await page.evaluate(
            "[...document.querySelectorAll('.graphiql-editor-tools button')]"
            ".find(b => b.textContent.trim() == 'Headers').click()"
        )
        headers_editor = (
            "document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror')"
        )
        await page.wait_for(f"!!{headers_editor}")
        await page.evaluate(
            f"{headers_editor}.CodeMirror.setValue({json.dumps(json.dumps({'Authorization': f'Bearer {token}'}))})"
        )
        answer = await run_in_graphiql(page, "{ me { username type } }")

    # then
    assert answer == {"data": {"me": {"username": "jo.hill", "type": "TEACHER"}}}
    assert_nothing_failed(page, server_url)


async def open_editor_tab(page: Page, name: str) -> str:
    """Opens GraphiQL's Variables or Headers tab; the expression of its editor."""
    await page.evaluate(
        "[...document.querySelectorAll('.graphiql-editor-tools button')]"
        f".find(b => b.textContent.trim() == {json.dumps(name)}).click()"
    )
    editor = "document.querySelector('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror')"
    await page.wait_for(f"!!{editor}")
    return editor


async def test_graphiql_keeps_nothing_typed_in_the_browsers_storage(
    server_url: str, school: SchoolFixture, tmp_path: Path
) -> None:
    # given a browser signed in as the admin
    secret = "Typed-Password-8642"
    async with browser(tmp_path / "profile") as page:
        await page.send(
            "Network.setCookie",
            name="rollcall_session",
            value=school.admin_token,
            url=server_url,
            httpOnly=True,
        )
        await page.navigate(f"{server_url}/graphql")
        await page.wait_for(f"{QUERY_EDITOR} && {RUN} && !{RUN}.disabled")

        # when a query is run with a password typed into its variables (and into the query itself)
        variables = await open_editor_tab(page, "Variables")
        await page.evaluate(f"{variables}.CodeMirror.setValue({json.dumps(json.dumps({'s': secret}))})")
        answer = await run_in_graphiql(
            page, f"query Typed($s: String) {{ users(filter: {{search: $s}}) {{ totalCount }} }} # {secret}"
        )
        assert answer == {"data": {"users": {"totalCount": 0}}}
        await asyncio.sleep(1)  # GraphiQL writes its tabs and history a moment after a change

        # then the browser's storage holds nothing of it, nor anything at all of GraphiQL's
        stored = await page.evaluate(
            "JSON.stringify({local: {...localStorage}, session: {...sessionStorage}})"
        )
        assert json.loads(stored) == {"local": {}, "session": {}}, stored
        # and a fresh visit starts from the default query
        await page.navigate(f"{server_url}/graphql")
        await page.wait_for(f"{QUERY_EDITOR} && {RUN} && !{RUN}.disabled")
        shown = await page.evaluate(f"{QUERY_EDITOR}.CodeMirror.getValue()")
        assert secret not in shown and "me {" in shown, shown
    assert_nothing_failed(page, server_url)


# Each pupil's name as printed, and a hard one: long, hyphenated, accented.
PUPILS = [
    ("Amy", "Okafor"),
    ("Ben", "Adams"),
    ("Zoë", "Ó Súilleabháin"),
    ("Maximiliana", "Featherstonehaugh-Worthington"),
    ("Chloé", "Müller"),
    ("Dev", "Patel"),
    ("Eva", "Nowak"),
    ("Finn", "O'Brien"),
    ("Grace", "Kim"),
    ("Hamza", "Al-Sayed"),
]
MM = 72 / 25.4  # PDF points in a millimetre
A4 = (210 * MM, 297 * MM)
MARGIN, CARD_WIDTH, CARD_HEIGHT = 10 * MM, 95 * MM, 69 * MM  # the sheet's @page margin and its 2 x 4 grid
DPI = 150
WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')


def card_at(x: float, y: float) -> tuple[int, int]:
    """Which card of the 2 x 4 grid (column, row) the point (in points from the top left) is on."""
    return int((x - MARGIN) // CARD_WIDTH), int((y - MARGIN) // CARD_HEIGHT)


def read_qr_codes(folder: Path) -> list[list[zxingcpp.Barcode]]:
    """The QR codes zxing-cpp finds on each page picture pdftoppm drew, page by page."""
    return [
        zxingcpp.read_barcodes(Image.open(picture), formats=zxingcpp.BarcodeFormat.QRCode)
        for picture in sorted(folder.glob("page-*.png"))
    ]


async def test_the_login_card_sheet_prints_eight_legible_cards_to_an_a4_page_whose_codes_sign_in(
    http: httpx.AsyncClient, db: Database, school: SchoolFixture, tmp_path: Path
) -> None:
    pdftoppm, pdfinfo, pdftotext = (need(p, "poppler-utils") for p in ("pdftoppm", "pdfinfo", "pdftotext"))
    # given a class of ten pupils
    pupils = {f"p{n}.{uuid.uuid4().hex[:4]}": (first, surname) for n, (first, surname) in enumerate(PUPILS)}
    ids = [
        await make_user(db, school, username=username, first_name=first, surname=surname)
        for username, (first, surname) in pupils.items()
    ]
    class_id = await make_class(db, school, "4A", *ids)

    # when its sheet is opened and printed to PDF
    response = await http.get(
        "/login-cards",
        params={"classId": str(class_id)},
        headers={"Authorization": f"Bearer {school.admin_token}"},
    )
    assert response.status_code == 200
    html, pdf = tmp_path / "sheet.html", tmp_path / "sheet.pdf"
    await asyncio.to_thread(html.write_text, response.text, encoding="utf-8")
    await print_to_pdf(html, pdf, tmp_path / "profile")

    # then it is two A4 pages
    info = await run(pdfinfo, "-f", "1", "-l", "9", str(pdf))
    assert re.search(r"^Pages:\s+2$", info, re.MULTILINE), info
    sizes = re.findall(r"^Page\s+\d+ size:\s+([\d.]+) x ([\d.]+) pts", info, re.MULTILINE)
    assert len(sizes) == 2
    assert all(abs(float(w) - A4[0]) < 1 and abs(float(h) - A4[1]) < 1 for w, h in sizes), sizes

    # and every QR code read from the rendered pages (8 on the first, 2 on the second) signs its pupil in
    await run(pdftoppm, "-r", str(DPI), "-png", str(pdf), str(tmp_path / "page"))
    pages_read = await asyncio.to_thread(read_qr_codes, tmp_path)
    assert len(pages_read) == 2
    signed_in: dict[str, tuple[int, tuple[int, int]]] = {}
    for number, barcodes in enumerate(pages_read, start=1):
        for barcode in barcodes:
            body = await graphql(
                http,
                LOGIN_WITH_QR,
                {"code": barcode.text},
                headers={"X-Forwarded-For": f"2001:db8::7:{uuid.uuid4().hex[:4]}"},
            )
            assert body["data"]["loginWithQr"]["errors"] == []
            username = body["data"]["loginWithQr"]["user"]["username"]
            centre = barcode.position.top_left
            signed_in[username] = (number, card_at(centre.x * 72 / DPI, centre.y * 72 / DPI))
    assert [len(barcodes) for barcodes in pages_read] == [8, 2]
    assert sorted(signed_in) == sorted(pupils)

    # and each pupil's name is printed on their own card, whole, in type large enough to read
    layout = await run(pdftotext, "-bbox", str(pdf), "-")
    pages = layout.split("<page ")[1:]
    assert len(pages) == 2
    for username, (number, card) in signed_in.items():
        first, surname = pupils[username]
        words = [
            (float(y1) - float(y0), unescape(text))
            for x0, y0, x1, y1, text in WORD.findall(pages[number - 1])
            if card_at(float(x0), float(y0)) == card and card_at(float(x1), float(y1)) == card
        ]
        on_card = "".join(text for _, text in words)  # in reading order
        name = f"{first}{surname}".replace(" ", "")
        assert name in on_card, (username, on_card)
        tallest = max(height for height, text in words if text and text in f"{first} {surname}")
        assert tallest >= 14, (username, tallest)  # 18 pt bold on the card

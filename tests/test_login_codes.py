import os
import random
import re
import stat
import string
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import zxingcpp

from db.login_cards.codes import (
    CODE_LENGTH,
    LoginCode,
    decode_login_code,
    default_expiry,
    encode_login_code,
    load_or_create_secret,
    secret_from_env,
)
from db.login_cards.sheet import CardView, login_card_sheet, make_qr, qr_svg
from tests.qr import rasterise

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
SCHOOL_ID = uuid.UUID("6f1c2a4e-0d1b-4c55-9a8e-3b2f1e0c7d11")
USER_ID = uuid.UUID("a3e5c7d9-2b4f-4e61-8c0a-5d7f9b1e3c22")
EXPIRES_AT = datetime(2026, 8, 31, 23, 59, 59, tzinfo=UTC)
NOW = datetime(2025, 11, 3, 9, 15, tzinfo=UTC)
CODE = LoginCode(school_id=SCHOOL_ID, user_id=USER_ID, version=1, expires_at=EXPIRES_AT)
BASE32 = string.ascii_uppercase + "234567"
SVG_NS = "{http://www.w3.org/2000/svg}"


def test_round_trip() -> None:
    text = encode_login_code(CODE, secret=SECRET)

    assert decode_login_code(text, secret=SECRET, now=NOW) == CODE
    assert re.fullmatch(r"RC1[A-Z2-7]+", text)
    assert len(text) == CODE_LENGTH == 101


def test_code_length_does_not_depend_on_contents() -> None:
    other = LoginCode(
        school_id=uuid.UUID(int=0),
        user_id=uuid.UUID(int=2**128 - 1),
        version=2**32 - 1,
        expires_at=datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC),
    )

    assert len(encode_login_code(other, secret=SECRET)) == len(encode_login_code(CODE, secret=SECRET))


def test_code_is_opaque() -> None:
    text = encode_login_code(CODE, secret=SECRET)

    for visible in (str(SCHOOL_ID), str(USER_ID), SCHOOL_ID.hex, USER_ID.hex, "AMELIA", "OKAFOR"):
        assert visible.upper() not in text


def test_every_single_character_change_is_refused() -> None:
    text = encode_login_code(CODE, secret=SECRET)

    for position, original in enumerate(text):
        for replacement in BASE32.replace(original, ""):
            tampered = text[:position] + replacement + text[position + 1 :]
            assert decode_login_code(tampered, secret=SECRET, now=NOW) is None, (position, replacement)


def test_wrong_secret_is_refused() -> None:
    text = encode_login_code(CODE, secret=SECRET)

    assert decode_login_code(text, secret=OTHER_SECRET, now=NOW) is None


def test_expired_code_is_refused() -> None:
    text = encode_login_code(CODE, secret=SECRET)

    assert decode_login_code(text, secret=SECRET, now=EXPIRES_AT - timedelta(seconds=1)) == CODE
    assert decode_login_code(text, secret=SECRET, now=EXPIRES_AT) is None
    assert decode_login_code(text, secret=SECRET, now=EXPIRES_AT + timedelta(seconds=1)) is None
    assert decode_login_code(text, secret=SECRET, now=EXPIRES_AT + timedelta(days=400)) is None


def test_new_version_makes_a_different_code() -> None:
    rotated = LoginCode(school_id=SCHOOL_ID, user_id=USER_ID, version=2, expires_at=EXPIRES_AT)

    old_text = encode_login_code(CODE, secret=SECRET)
    new_text = encode_login_code(rotated, secret=SECRET)

    assert old_text != new_text
    decoded = decode_login_code(old_text, secret=SECRET, now=NOW)
    assert decoded is not None and decoded.version == 1


def test_same_code_every_time_so_cards_can_be_reprinted() -> None:
    assert encode_login_code(CODE, secret=SECRET) == encode_login_code(CODE, secret=SECRET)


def test_lowercase_and_surrounding_whitespace_are_accepted() -> None:
    text = encode_login_code(CODE, secret=SECRET)

    assert decode_login_code(f"  {text.lower()}\r\n", secret=SECRET, now=NOW) == CODE
    assert decode_login_code(f"\t{text}\n", secret=SECRET, now=NOW) == CODE


def test_garbage_is_refused_without_raising() -> None:
    rng = random.Random(7)
    text = encode_login_code(CODE, secret=SECRET)
    samples = [
        "",
        " ",
        "RC1",
        "RC1" + "=" * 98,
        text + "A",
        text[:-1],
        text + "=",
        text.replace("RC1", "RC2"),
        "X" * 10_000,
        text * 100,
        text[:50] + "\x00" + text[51:],
        text[:50] + "é" + text[51:],
        text[:50] + "\ud800" + text[51:],
        "RC1" + "0" * 98,
        "RC1" + "1" * 98,
    ]
    for _ in range(100):
        samples.append("".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(200))))
    for _ in range(100):
        samples.append(bytes(rng.randrange(256) for _ in range(rng.randrange(200))).decode("latin-1"))
    for _ in range(150):  # right shape, so these reach the signature check
        samples.append("RC1" + "".join(rng.choice(BASE32) for _ in range(CODE_LENGTH - 3)))
    for _ in range(150):
        samples.append("".join(rng.choice(BASE32 + "189=- \n") for _ in range(CODE_LENGTH)))

    assert len(samples) >= 500
    for sample in samples:
        assert decode_login_code(sample, secret=SECRET, now=NOW) is None, repr(sample)


def test_login_code_rejects_values_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="version"):
        LoginCode(school_id=SCHOOL_ID, user_id=USER_ID, version=0, expires_at=EXPIRES_AT)
    with pytest.raises(ValueError, match="UTC"):
        LoginCode(school_id=SCHOOL_ID, user_id=USER_ID, version=1, expires_at=datetime(2026, 8, 31))
    with pytest.raises(ValueError, match="whole seconds"):
        LoginCode(
            school_id=SCHOOL_ID, user_id=USER_ID, version=1, expires_at=EXPIRES_AT.replace(microsecond=5)
        )


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        encode_login_code(CODE, secret=b"short")


def test_secret_file_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "login-code-secret"

    first = load_or_create_secret(path)
    second = load_or_create_secret(path)

    assert len(first) == 32
    assert first == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="ascii") == first.hex() + "\n"
    assert os.listdir(tmp_path) == ["login-code-secret"]


def test_secret_file_created_meanwhile_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given another process writes the secret between our read and our link
    path = tmp_path / "login-code-secret"
    theirs = bytes(range(100, 132))
    real_link = os.link

    def link_after_the_other_process(src: str, dst: Path) -> None:
        path.write_text(theirs.hex(), encoding="ascii")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_the_other_process)

    # when
    secret = load_or_create_secret(path)

    # then
    assert secret == theirs
    assert os.listdir(tmp_path) == ["login-code-secret"]


def test_corrupt_secret_file_is_an_error_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "login-code-secret"
    path.write_text("not hex", encoding="ascii")

    with pytest.raises(ValueError, match="login-code-secret: .*hexadecimal"):
        load_or_create_secret(path)
    assert path.read_text(encoding="ascii") == "not hex"


def test_secret_from_env() -> None:
    assert secret_from_env(" " + "ab" * 32 + "\n") == b"\xab" * 32
    assert secret_from_env("AB" * 48) == b"\xab" * 48
    with pytest.raises(ValueError, match="hexadecimal"):
        secret_from_env("zz" * 32)
    with pytest.raises(ValueError, match="at least 32 bytes") as error:
        secret_from_env("ab" * 31)
    assert "ab" * 31 not in str(error.value)


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2025, 3, 1), date(2025, 8, 31)),
        (date(2025, 8, 30), date(2025, 8, 31)),
        (date(2025, 8, 31), date(2025, 8, 31)),
        (date(2025, 9, 1), date(2026, 8, 31)),
        (date(2025, 12, 31), date(2026, 8, 31)),
    ],
)
def test_default_expiry_is_end_of_school_year(today: date, expected: date) -> None:
    assert default_expiry(today) == datetime(
        expected.year, expected.month, expected.day, 23, 59, 59, tzinfo=UTC
    )


def test_default_expiry_with_school_setting() -> None:
    assert default_expiry(date(2025, 7, 21), school_year_ends=(7, 20)) == datetime(
        2026, 7, 20, 23, 59, 59, tzinfo=UTC
    )
    assert default_expiry(date(2025, 1, 10), school_year_ends=(2, 29)) == datetime(
        2025, 2, 28, 23, 59, 59, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="not a day of the year"):
        default_expiry(date(2025, 1, 10), school_year_ends=(4, 31))


def test_default_expiry_makes_a_valid_code() -> None:
    code = LoginCode(school_id=SCHOOL_ID, user_id=USER_ID, version=3, expires_at=default_expiry(NOW.date()))

    assert decode_login_code(encode_login_code(code, secret=SECRET), secret=SECRET, now=NOW) == code


def test_served_qr_decodes_to_the_code() -> None:
    # given
    text = encode_login_code(CODE, secret=SECRET)
    qr = make_qr(text)

    # when the SVG we serve is drawn and read by a real decoder
    svg = qr_svg(text)
    (barcode,) = zxingcpp.read_barcodes(rasterise(svg))

    # then
    assert qr.designator == "5-M"
    assert not qr.is_micro
    assert barcode.format == zxingcpp.BarcodeFormat.QRCode
    assert barcode.ec_level == "M"
    assert barcode.text == text
    assert decode_login_code(barcode.text, secret=SECRET, now=NOW) == CODE


def test_served_qr_has_quiet_zone_and_print_size() -> None:
    text = encode_login_code(CODE, secret=SECRET)
    svg = qr_svg(text)
    root = ET.fromstring(svg)

    assert not svg.startswith("<?xml")
    assert root.attrib["viewBox"] == "0 0 45 45"  # 37 modules + 4 quiet modules each side
    assert (root.attrib["width"], root.attrib["height"]) == ("35mm", "35mm")
    assert root.attrib["class"] == "login-qr"
    assert root.findtext(f"{SVG_NS}title") == "QR login code"
    modules = rasterise(svg, pixels_per_module=1)
    matrix = [list(row) for row in make_qr(text).matrix_iter(border=4)]
    assert [[int(modules.getpixel((x, y)) == 0) for x in range(45)] for y in range(45)] == matrix


NAMES = [
    ("Amelia", "Okafor"),
    ("Oliver", "Nowak"),
    ("Isla", "MacLeod"),
    ("Noah", "Evans"),
    ("Freya", "Patel"),
    ("Arlo", "Byrne"),
    ("Mia", "Jones"),
    ("Theo", "Kowalski"),
    ("Ava", "O'Neill"),
]


def card_view(first_name: str, surname: str, *, class_name: str | None = "3B") -> CardView:
    user_id = uuid.uuid5(SCHOOL_ID, first_name)
    code = LoginCode(school_id=SCHOOL_ID, user_id=user_id, version=1, expires_at=EXPIRES_AT)
    return CardView(
        first_name=first_name,
        surname=surname,
        username=f"{first_name.lower()}.{surname[0].lower()}",
        class_name=class_name,
        code=encode_login_code(code, secret=SECRET),
        expires_at=EXPIRES_AT,
    )


def test_sheet_puts_eight_cards_on_a_page() -> None:
    cards = [card_view(first, surname) for first, surname in NAMES]

    sheet = login_card_sheet(cards, school_name="Glenview Primary", title="Login cards: 3B")

    pages = sheet.split('<section class="page">')[1:]
    assert [page.count('<article class="card">') for page in pages] == [8, 1]
    for chunk in sheet.split('<article class="card">')[1:]:
        assert chunk.count("<svg") == 1
    for card in cards:
        assert sheet.count(f"{card.first_name} {card.surname}".replace("'", "&#x27;")) == 1
        assert sheet.count(f">{card.username}<") == 1
        assert qr_svg(card.code) in sheet
    assert sheet.count("Glenview Primary") == 9
    assert sheet.count("Class: 3B") == 9
    assert sheet.count('Valid until <time datetime="2026-08-31">31 August 2026</time>') == 9


def test_sheet_is_a4_self_contained_and_printable() -> None:
    sheet = login_card_sheet([card_view("Amelia", "Okafor")], school_name="Glenview Primary", title="Cards")

    assert sheet.startswith("<!DOCTYPE html>")
    assert "@page { size: A4; margin: 10mm; }" in sheet
    assert "break-after: page;" in sheet
    assert "dashed" in sheet
    assert "Print this page (Ctrl+P)" in sheet
    assert "@media print { .screen-note { display: none; } }" in sheet
    for external in ("<link", "<script", "src=", "href=", "url("):
        assert external not in sheet


def test_sheet_escapes_everything() -> None:
    card = card_view("<script>alert(1)</script>", "O'Brien & Co", class_name="<b>3B</b>")

    sheet = login_card_sheet([card], school_name="St <Mary's>", title="</title><script>x()</script>")

    assert "<script" not in sheet
    assert "&lt;script&gt;alert(1)&lt;/script&gt; O&#x27;Brien &amp; Co" in sheet
    assert "Class: &lt;b&gt;3B&lt;/b&gt;" in sheet
    assert "St &lt;Mary&#x27;s&gt;" in sheet
    assert "<title>&lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;</title>" in sheet


def test_sheet_without_class_leaves_the_class_out() -> None:
    sheet = login_card_sheet([card_view("Amelia", "Okafor", class_name=None)], school_name="G", title="T")

    assert "Class:" not in sheet


def test_empty_sheet_says_so() -> None:
    sheet = login_card_sheet([], school_name="Glenview Primary", title="Login cards")

    assert "There are no login cards to print." in sheet
    assert "<section" not in sheet
    assert "<svg" not in sheet

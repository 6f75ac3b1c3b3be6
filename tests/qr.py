"""Login-card test helpers: reading the QR codes the server draws as a webcam would (rasterise the <svg>,
decode it with zxing-cpp), and classes to print cards for."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET

import zxingcpp
from PIL import Image, ImageDraw

from db.engine import Database
from db.models import ClassKind, ClassMembership, SchoolClass
from db.scope import school_scope
from tests.conftest import SchoolFixture

SVG_NS = "{http://www.w3.org/2000/svg}"


def rasterise(svg: str, *, pixels_per_module: int = 8) -> Image.Image:
    """Draw the modules of a served QR <svg> (one path of horizontal unit strokes) as a picture."""
    root = ET.fromstring(svg)
    _, _, width, height = (int(float(v)) for v in root.attrib["viewBox"].split())
    image = Image.new("L", (width * pixels_per_module, height * pixels_per_module), 255)
    draw = ImageDraw.Draw(image)
    (path,) = [p for p in root.iter(f"{SVG_NS}path") if p.get("class") == "login-qr-modules"]
    assert path.get("stroke") == "#000"
    x = y = 0.0
    for move, dx, dy, length in re.findall(r"([Mm])(-?[\d.]+) (-?[\d.]+)h([\d.]+)", path.attrib["d"]):
        x, y = (float(dx), float(dy)) if move == "M" else (x + float(dx), y + float(dy))
        top = (y - 0.5) * pixels_per_module
        right = x + float(length)
        draw.rectangle(
            (x * pixels_per_module, top, right * pixels_per_module - 1, top + pixels_per_module - 1), fill=0
        )
        x = right
    return image


def read_qr(svg: str) -> str:
    """The text of the one standard QR code (error correction M) drawn by `svg`."""
    (barcode,) = zxingcpp.read_barcodes(rasterise(svg))
    assert barcode.format == zxingcpp.BarcodeFormat.QRCode
    assert barcode.ec_level == "M"
    text: str = barcode.text
    return text


async def make_class(
    db: Database,
    school: SchoolFixture,
    name: str,
    *members: uuid.UUID,
    kind: ClassKind = ClassKind.REGISTRATION,
) -> uuid.UUID:
    async with school_scope(db, school.id) as session:
        school_class = SchoolClass(school_id=school.id, id=uuid.uuid4(), name=name, kind=kind)
        session.add(school_class)
        await session.flush()
        session.add_all(
            ClassMembership(school_id=school.id, class_id=school_class.id, user_id=member, kind=kind)
            for member in members
        )
        return school_class.id

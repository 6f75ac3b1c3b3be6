"""The roster CSV: read what schools' spreadsheets produce, and write the export that is also the template.

Plain functions on bytes and text. Deciding what a row means for the roster (create, update, ...) is the
importer's job; this module only reads the file and reports what is wrong with it, cell by cell.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from db.models import UserType
from db.names import CLASS_NAME_MAX, PERSON_NAME_MAX, class_name_key, name_problem, tidy_name, visible
from db.passwords import MAX_LENGTH as PASSWORD_MAX
from db.users import EMAIL, EMAIL_MAX, USERNAME, USERNAME_MAX

COLUMNS = (
    "username",
    "first_name",
    "surname",
    "type",
    "registration_class",
    "teaching_classes",
    "is_admin",
    "email",
    "password",
)
DELIMITERS = (",", ";", "\t")

# Keys are headings with case, spaces and punctuation removed, so "First Name", "first-name" and
# "FIRST_NAME" all read as "firstname". None: a column older templates had, read and ignored.
_HEADINGS: dict[str, str | None] = {
    "username": "username",
    "user": "username",
    "firstname": "first_name",
    "forename": "first_name",
    "givenname": "first_name",
    "surname": "surname",
    "lastname": "surname",
    "familyname": "surname",
    "type": "type",
    "usertype": "type",
    "registrationclass": "registration_class",
    "regclass": "registration_class",
    "class": "registration_class",
    "teachingclasses": "teaching_classes",
    "teachingclass": "teaching_classes",
    "isadmin": "is_admin",
    "admin": "is_admin",
    "password": "password",
    "email": "email",
    "emailaddress": "email",
}
_TYPES: dict[str, tuple[UserType, bool]] = {
    "pupil": (UserType.PUPIL, False),
    "student": (UserType.PUPIL, False),
    "teacher": (UserType.TEACHER, False),
    "staff": (UserType.TEACHER, False),
    "administrator": (UserType.TEACHER, True),
    "admin": (UserType.TEACHER, True),
}
_BOOLEANS = {
    "true": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "no": False,
    "n": False,
    "0": False,
}
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}

# OWASP's advice on CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SIGNATURES = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip file"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel workbook (.xls)"),
    (b"%PDF-", "a PDF document"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SAVE_AS_CSV = 'In your spreadsheet program use "Save As" with the "CSV UTF-8" format, and upload that file.'


class CsvError(Exception):
    """The file as a whole cannot be read; the message tells the administrator what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class RowProblem:
    row_number: int
    column: str | None  # one of COLUMNS, or None when the problem is the row's shape
    message: str


@dataclass(frozen=True, slots=True)
class RosterRow:
    row_number: int
    username: str
    first_name: str
    surname: str
    type: UserType | None  # None when blank: the importer reads that as a pupil
    is_admin: bool | None  # None when blank
    registration_class: str | None
    teaching_classes: tuple[str, ...]
    password: str | None  # exactly as typed; None when blank
    problems: tuple[RowProblem, ...]
    email: str | None = None  # None when blank


@dataclass(frozen=True, slots=True)
class ParsedRoster:
    rows: tuple[RosterRow, ...]
    columns: frozenset[str]  # which of COLUMNS the file has: a missing column is not a column of blanks
    warnings: tuple[str, ...]
    delimiter: str

    @property
    def problems(self) -> tuple[RowProblem, ...]:
        return tuple(problem for row in self.rows for problem in row.problems)


@dataclass(frozen=True, slots=True)
class ExportRow:
    username: str
    first_name: str
    surname: str
    type: UserType
    registration_class: str | None
    teaching_classes: Sequence[str]
    is_admin: bool
    email: str | None = None


def decode_upload(data: bytes, *, max_bytes: int) -> str:
    """Turn an uploaded file into text: UTF-8 with or without a BOM, otherwise Windows-1252."""
    if not data:
        raise CsvError("The file is empty.")
    if len(data) > max_bytes:
        raise CsvError(
            f"The file is larger than the limit of {_size(max_bytes)}. Split it into smaller files."
        )
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            raise CsvError(f"This file is {kind}, not a CSV file. {_SAVE_AS_CSV}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CsvError(f'This file is saved as UTF-16 ("Unicode Text"), not as CSV. {_SAVE_AS_CSV}')
    if b"\x00" in data:
        raise CsvError(f"The file contains NUL bytes, so it is binary data, not a CSV file. {_SAVE_AS_CSV}")
    text = _decode(data)
    control = _CONTROL.search(text)
    if control:
        line = text.count("\n", 0, control.start()) + 1
        raise CsvError(
            f"Line {line} contains the control character U+{ord(control.group()):04X}, "
            f"so the file looks like binary data rather than CSV text. {_SAVE_AS_CSV}"
        )
    return text


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        if data.startswith(codecs.BOM_UTF8):
            # The decoder counts from after the BOM.
            line = data.count(b"\n", len(codecs.BOM_UTF8), len(codecs.BOM_UTF8) + error.start) + 1
            message = f"The file is marked as UTF-8 but line {line} is not UTF-8. {_SAVE_AS_CSV}"
            raise CsvError(message) from None
    if mixed := _mixed_rows(data):
        # Read as Windows-1252, the UTF-8 rows would turn "Zoë" into "ZoÃ«" and update every such user.
        raise CsvError(
            f"Row {mixed[0]} is UTF-8 but row {mixed[1]} is Windows-1252, so the file mixes two "
            f"encodings. {_SAVE_AS_CSV}"
        )
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        raise CsvError(f"The file is neither UTF-8 nor Windows-1252 text. {_SAVE_AS_CSV}") from None


def _mixed_rows(data: bytes) -> tuple[int, int] | None:
    """The first row in UTF-8 and the first in another encoding, for a file that is not UTF-8 throughout."""
    # Latin-1 maps each byte to one character, so every cell gives back its own bytes; the characters that
    # shape a CSV file are ASCII, so the rows are the ones the roster is read as.
    text = data.decode("latin-1")
    first: dict[bool, int] = {}
    try:
        for row_number, cells in _records(text, _sniff_delimiter(text)):
            for cell in (cell.encode("latin-1") for cell in cells):
                if not cell.isascii():
                    first.setdefault(_is_utf8(cell), row_number)
    except CsvError:
        return None  # reading the text reports the row that cannot be read
    return (first[True], first[False]) if len(first) == 2 else None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _size(count: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes"


def parse_roster(text: str, *, max_rows: int) -> ParsedRoster:
    """Read a roster from decoded CSV text; the first non-blank row is the header.

    Row numbers are the ones a spreadsheet shows: they count records, not physical lines, so a quoted
    value spanning several lines is one row, and blank rows are skipped but still counted. The header
    is row 1 and the first data row row 2 (unless blank rows come before the header).
    """
    delimiter = _sniff_delimiter(text)
    records = _records(text, delimiter)
    header_row, header = next(((n, cells) for n, cells in records if not _blank(cells)), (0, []))
    if not header:
        raise CsvError("The file is empty.")
    positions, warnings = _read_header(header, header_row)
    reader = _RowReader(header=header, positions=positions, delimiter=delimiter)
    rows: list[RosterRow] = []
    for row_number, cells in records:
        if _blank(cells):
            continue
        if len(rows) == max_rows:
            raise CsvError(
                f"The file has more than {max_rows:,} users; the limit is {max_rows:,} rows. "
                "Split it into smaller files."
            )
        rows.append(reader.read(row_number, cells))
    warnings += [
        f"Column {_letter(index)} has no heading; its values were ignored."
        for index in sorted(reader.unheaded_used)
    ]
    return ParsedRoster(
        rows=tuple(rows), columns=frozenset(positions), warnings=tuple(warnings), delimiter=delimiter
    )


def _sniff_delimiter(text: str) -> str:
    # The header decides: the candidate that splits it into the most known headings, then into the most
    # cells. Data rows are no guide, since names and class lists contain commas and semicolons.
    line = next((line for line in io.StringIO(text) if line.strip(' \t\r\n,;"')), "")

    def score(delimiter: str) -> tuple[int, int]:
        cells = next(csv.reader([line], delimiter=delimiter), [])
        return sum(_heading_key(cell) in _HEADINGS for cell in cells), len(cells)

    return max(DELIMITERS, key=score)


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    # strict: a quote left open would otherwise swallow the rest of the file into one cell, silently.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    row_number = 0
    while True:
        row_number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise CsvError(_read_error(row_number, str(error))) from None
        yield row_number, cells


def _read_error(row_number: int, reason: str) -> str:
    if "unexpected end of data" in reason:
        return (
            f"Row {row_number} opens a quoted value that is never closed. "
            'Check the quotes (") in that row: a value in quotes must end with a quote.'
        )
    if "expected after" in reason:
        return (
            f"Row {row_number} has text right after a closing quote. Put the whole value in quotes and "
            'write any quote inside it twice ("").'
        )
    if "field limit" in reason:
        return f"Row {row_number} has a value far too long for a roster."
    return f"Row {row_number} cannot be read as CSV ({reason})."


def _blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def _heading_key(heading: str) -> str:
    return re.sub(r"[\W_]+", "", heading.casefold())


def _letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _read_header(header: list[str], row_number: int) -> tuple[dict[str, int], list[str]]:
    positions: dict[str, int] = {}
    warnings: list[str] = []
    for index, heading in enumerate(header):
        if not heading.strip():
            continue
        key = _heading_key(heading)
        if key not in _HEADINGS:
            warnings.append(
                f"Column {_letter(index)} ('{heading.strip()}') is not a roster column and was ignored."
            )
            continue
        field = _HEADINGS[key]
        if field is None:
            continue
        if field in positions:
            earlier = positions[field]
            raise CsvError(
                f"Columns {_letter(earlier)} ('{header[earlier].strip()}') and "
                f"{_letter(index)} ('{heading.strip()}') both give the {field.replace('_', ' ')}. "
                "Keep only one of them."
            )
        positions[field] = index
    if "username" not in positions:
        found = ", ".join(f"'{heading.strip()}'" for heading in header[:10])
        found += ", ..." if len(header) > 10 else ""
        raise CsvError(
            f"The header (row {row_number}) has no username column; its columns are {found}. "
            f"The first row must name the columns: {', '.join(COLUMNS)}."
        )
    return positions, warnings


class _RowReader:
    """Reads data rows under one header, remembering each username's first row to report duplicates."""

    def __init__(self, *, header: list[str], positions: dict[str, int], delimiter: str) -> None:
        self.width = len(header)
        self.positions = positions
        self.delimiter = delimiter
        self.unheaded = [index for index, heading in enumerate(header) if not heading.strip()]
        self.unheaded_used: set[int] = set()
        self.first_rows: dict[str, int] = {}

    def read(self, row_number: int, cells: list[str]) -> RosterRow:
        problems: list[RowProblem] = []

        def problem(column: str | None, message: str | None) -> None:
            if message:
                problems.append(RowProblem(row_number, column, message))

        def cell(field: str) -> str:
            index = self.positions.get(field)
            return cells[index] if index is not None and index < len(cells) else ""

        if any(value.strip() for value in cells[self.width :]):
            problem(
                None,
                f"This row has {len(cells)} cells but the header has {self.width} columns. "
                f"Is there a {_DELIMITER_NAMES[self.delimiter]} in a value that is not in quotes?",
            )
        self.unheaded_used.update(i for i in self.unheaded if i < len(cells) and cells[i].strip())

        username = _unescape(cell("username")).strip()
        problem("username", _username_problem(username))
        if username:
            earlier = self.first_rows.setdefault(username.lower(), row_number)
            if earlier != row_number:
                problem(
                    "username",
                    f"The username '{username}' is already in row {earlier}; a user can appear only once.",
                )

        first_name = _name(cell("first_name"))
        surname = _name(cell("surname"))
        problem("first_name", name_problem(first_name, what="The first name", most=PERSON_NAME_MAX))
        problem("surname", name_problem(surname, what="The surname", most=PERSON_NAME_MAX))

        raw_type = _unescape(cell("type")).strip()
        type_, admin_by_type = _TYPES.get(raw_type.casefold(), (None, False))
        if raw_type and type_ is None:
            problem(
                "type",
                f"The type '{raw_type}' is not known; use PUPIL or TEACHER "
                "(or Administrator for a teacher who is an admin).",
            )

        raw_admin = _unescape(cell("is_admin")).strip()
        is_admin = _BOOLEANS.get(raw_admin.casefold()) if raw_admin else None
        if raw_admin and is_admin is None:
            problem("is_admin", f"is_admin must be true or false (or yes/no, 1/0), not '{raw_admin}'.")
        if admin_by_type:
            if is_admin is False:
                problem(
                    "is_admin", f"The type '{raw_type}' makes this user an admin, but is_admin says false."
                )
            is_admin = True
        if is_admin and (type_ is UserType.PUPIL or not raw_type):
            problem("is_admin", "Only teachers can be admins: set the type to TEACHER, or is_admin to false.")

        registration_class = _name(cell("registration_class")) or None
        problem("registration_class", _class_name_problem(registration_class or ""))
        teaching_classes = _class_list(_unescape(cell("teaching_classes")))
        for name in teaching_classes:
            problem("teaching_classes", _class_name_problem(name))

        email = _unescape(cell("email")).strip() or None
        if email is not None and (len(email) > EMAIL_MAX or not EMAIL.fullmatch(email)):
            problem(
                "email",
                f"'{email[:60]}' is not an email address such as name@school.example "
                f"(at most {EMAIL_MAX} characters).",
            )

        raw_password = cell("password")
        password = raw_password if raw_password.strip() else None
        problem("password", _length_problem("password", password or "", PASSWORD_MAX))

        return RosterRow(
            row_number=row_number,
            username=username,
            first_name=first_name,
            surname=surname,
            type=type_,
            is_admin=is_admin,
            registration_class=registration_class,
            teaching_classes=teaching_classes,
            password=password,
            problems=tuple(problems),
            email=email,
        )


def _username_problem(username: str) -> str | None:
    if not username:
        return "The username is blank."
    if too_long := _length_problem("username", username, USERNAME_MAX):
        return too_long
    if not USERNAME.fullmatch(username):
        bad = next(c for c in username if not (c.isascii() and (c.isalnum() or c in "._-")))
        return f"The username contains {bad!r}; use only letters, digits, dots, dashes and underscores."
    return None


def _length_problem(what: str, value: str, most: int) -> str | None:
    if len(value) > most:
        return f"The {what} is {len(value)} characters long; the most is {most}."
    return None


def _class_name_problem(name: str) -> str | None:
    return name_problem(name, what=f"The class name '{visible(name)[:20]}...'", most=CLASS_NAME_MAX)


def _name(raw: str) -> str:
    return tidy_name(_unescape(raw))


def _class_list(raw: str) -> tuple[str, ...]:
    # A line break separates classes like ";" does: spreadsheet users put one class per line in a cell.
    names: dict[str, str] = {}
    for part in re.split(r"[;\r\n]", raw):
        name = tidy_name(part)
        if name:
            names.setdefault(class_name_key(name), name)
    return tuple(names.values())


def _escape(value: str) -> str:
    # Quotes already in front are counted, so that _unescape(_escape(v)) == v for every v.
    return "'" + value if value.lstrip("'").startswith(_FORMULA_START) else value


def _unescape(value: str) -> str:
    return value[1:] if value.startswith("'") and value.lstrip("'").startswith(_FORMULA_START) else value


def export_lines(rows: Iterable[ExportRow]) -> Iterator[bytes]:
    """The export a line at a time, for a streamed response: the BOM and header first, CRLF line ends."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells: Sequence[str]) -> bytes:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text.encode("utf-8")

    yield codecs.BOM_UTF8 + line(COLUMNS)
    for row in rows:
        yield line(
            [
                _escape(row.username),
                _escape(row.first_name),
                _escape(row.surname),
                str(row.type),
                _escape(row.registration_class or ""),
                _escape(";".join(sorted(row.teaching_classes, key=str.casefold))),
                "true" if row.is_admin else "false",
                _escape(row.email or ""),
                "",
            ]
        )


def export_roster(rows: Iterable[ExportRow]) -> bytes:
    """The whole export as one file: UTF-8 with BOM, so spreadsheet programs read names right."""
    return b"".join(export_lines(rows))

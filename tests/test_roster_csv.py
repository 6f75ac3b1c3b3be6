from pathlib import Path

import pytest

from db.imports.roster_csv import (
    COLUMNS,
    CsvError,
    ExportRow,
    ParsedRoster,
    RosterRow,
    RowProblem,
    decode_upload,
    export_lines,
    export_roster,
    parse_roster,
)
from db.models import UserType

DATA = Path(__file__).parent / "data"
MAX_BYTES = 5_000_000
MAX_ROWS = 20_000
HEADER = "username,first_name,surname,type,registration_class,teaching_classes,is_admin,email,password"
SAVE_AS_CSV = 'In your spreadsheet program use "Save As" with the "CSV UTF-8" format, and upload that file.'
LOOKS_BINARY = f"so the file looks like binary data rather than CSV text. {SAVE_AS_CSV}"
ONLY_TEACHERS = "Only teachers can be admins: set the type to TEACHER, or is_admin to false."
PUPIL, TEACHER = UserType.PUPIL, UserType.TEACHER


def read(name: str) -> ParsedRoster:
    return parse_roster(decode_upload((DATA / name).read_bytes(), max_bytes=MAX_BYTES), max_rows=MAX_ROWS)


def parse(text: str, *, max_rows: int = MAX_ROWS) -> ParsedRoster:
    return parse_roster(text, max_rows=max_rows)


def roster_row(
    row_number: int,
    username: str,
    first_name: str = "",
    surname: str = "",
    *,
    type: UserType | None = None,
    is_admin: bool | None = None,
    registration_class: str | None = None,
    teaching_classes: tuple[str, ...] = (),
    password: str | None = None,
    problems: tuple[RowProblem, ...] = (),
    email: str | None = None,
) -> RosterRow:
    return RosterRow(
        row_number=row_number,
        username=username,
        first_name=first_name,
        surname=surname,
        type=type,
        is_admin=is_admin,
        registration_class=registration_class,
        teaching_classes=teaching_classes,
        password=password,
        problems=problems,
        email=email,
    )


def export_row(
    username: str,
    first_name: str = "Ann",
    surname: str = "Lee",
    *,
    type: UserType = PUPIL,
    registration_class: str | None = None,
    teaching_classes: tuple[str, ...] = (),
    is_admin: bool = False,
    email: str | None = None,
) -> ExportRow:
    return ExportRow(
        username=username,
        first_name=first_name,
        surname=surname,
        type=type,
        registration_class=registration_class,
        teaching_classes=teaching_classes,
        is_admin=is_admin,
        email=email,
    )


# Real files, as schools produce them


def test_export_edited_in_excel() -> None:
    roster = read("export_edited_in_excel.csv")

    assert roster.delimiter == ","
    assert roster.columns == frozenset(COLUMNS) - {"email"}  # exported before staff had email addresses
    assert roster.warnings == ()
    assert roster.rows == (
        roster_row(
            2,
            "amurphy",
            "Aoife",
            "Murphy",
            type=TEACHER,
            is_admin=True,
            teaching_classes=("7A Maths", "8B Maths"),
        ),
        roster_row(
            3,
            "bsmith",
            "Ben",
            "Smith, Jr",
            type=PUPIL,
            is_admin=False,
            registration_class="7A",
            teaching_classes=("7A Maths",),
        ),
        roster_row(
            4,
            "zoe.b",
            "Zoë",
            "O'Brien",
            type=PUPIL,
            is_admin=False,
            registration_class="7A",
            password="Sunflower-12",
        ),
        roster_row(
            5,
            "cdoyle",
            "Ciarán",
            'Doyle "CJ"',
            type=PUPIL,
            is_admin=False,
            registration_class="7B",
            teaching_classes=("7A Maths", "8B Maths"),
        ),
        roster_row(
            6,
            "x.hacker",
            "=cmd|' /C calc'!A0",
            "-Smith",
            type=PUPIL,
            is_admin=False,
            registration_class="7B",
            teaching_classes=("@home",),
        ),
        roster_row(7, "nnguyen", "Nguyễn", "Văn An", type=TEACHER, is_admin=False),
        roster_row(8, "new.pupil", "Fionn", "Ó Súilleabháin", type=PUPIL, registration_class="7B"),
    )


def test_semicolon_windows1252() -> None:
    data = (DATA / "semicolon_windows1252.csv").read_bytes()
    assert b"Ren\xe9" in data and b"O\x92Neill" in data  # really Windows-1252, not UTF-8

    roster = read("semicolon_windows1252.csv")

    assert roster.delimiter == ";"
    assert roster.warnings == ()
    assert roster.rows == (
        roster_row(2, "rene.l", "René", "Lefèvre", type=PUPIL, is_admin=False, registration_class="5A"),
        roster_row(
            3,
            "jorg.s",
            "Jörg",
            "Schröder",
            type=TEACHER,
            is_admin=True,
            teaching_classes=("Français 5A", "Deutsch 6B"),
        ),
        roster_row(
            4,
            "sean.o",
            "Seán",
            "O\u2019Neill",
            type=PUPIL,
            is_admin=False,
            registration_class="6B",
            teaching_classes=("Deutsch 6B",),
            password="Café-2024",
        ),
    )


def test_tab_separated() -> None:
    roster = read("tab_separated.csv")

    assert roster.delimiter == "\t"
    assert roster.columns == frozenset(
        {"username", "first_name", "surname", "type", "registration_class", "teaching_classes"}
    )
    assert roster.rows == (
        roster_row(2, "kwalsh", "Kate", "Walsh", type=TEACHER, teaching_classes=("Art 9C", "Art 9D")),
        roster_row(
            3, "lpatel", "Leo", "Patel, Jr", type=PUPIL, registration_class="9C", teaching_classes=("Art 9C",)
        ),
        roster_row(
            4,
            "mchen",
            "Mei",
            "Chen",
            type=PUPIL,
            registration_class="9D",
            teaching_classes=("art 9d", "Music 9D"),
        ),
    )


def test_legacy_columns() -> None:
    roster = read("legacy_columns.csv")

    assert roster.columns == frozenset(
        {"username", "first_name", "surname", "registration_class", "email", "type", "password"}
    )
    assert roster.warnings == ()  # the old email column is read: staff have email addresses
    assert roster.rows == (
        roster_row(
            2,
            "head",
            "Mary",
            "Byrne",
            type=TEACHER,
            is_admin=True,
            password="Headteacher-2024!",
            email="mary.byrne@school.example",
        ),
        roster_row(3, "jkelly", "John", "Kelly", registration_class="6A"),
        roster_row(4, "tkelly", "Tom", "Kelly", type=PUPIL, registration_class="6A", password="tiger7"),
        roster_row(5, "areid", "Anne", "Reid", type=TEACHER, email="a.reid@school.example"),
    )


def test_quoted_newlines_and_blank_lines_keep_spreadsheet_row_numbers() -> None:
    roster = read("quoted_newlines_blank_lines.csv")

    assert roster.rows == (
        roster_row(
            3,
            "asmith",
            "Anna",
            "Smith",
            type=PUPIL,
            registration_class="4A",
            teaching_classes=("Music 4A", "Science 4A"),
        ),
        roster_row(5, "bjones", "Bobby Jo", "Jones", type=PUPIL, registration_class="4A"),
        roster_row(7, "cking", "Carl", "King", type=TEACHER, teaching_classes=("Science 4A",)),
    )


def test_headers_in_any_case_and_order() -> None:
    roster = read("headers_any_case_order.csv")

    assert roster.columns == frozenset(COLUMNS) - {"email"}
    assert roster.warnings == ("Column I ('Phone') is not a roster column and was ignored.",)
    assert roster.rows == (
        roster_row(
            2, "dward", "Dan", "Ward", type=TEACHER, is_admin=False, teaching_classes=("Science 10A",)
        ),
        roster_row(3, "eward", "Eve", "Ward", type=PUPIL, registration_class="10A", password="Pa55 word "),
    )


def test_broken_no_username_column() -> None:
    with pytest.raises(CsvError) as raised:
        read("broken_no_username_column.csv")

    assert raised.value.message == (
        "The header (row 1) has no username column; its columns are "
        "'login', 'first_name', 'surname', 'type'. The first row must name the columns: "
        "username, first_name, surname, type, registration_class, teaching_classes, is_admin, email, "
        "password."
    )


def test_broken_duplicates_and_bad_values() -> None:
    roster = read("broken_duplicates_and_bad_values.csv")

    assert roster.problems == (
        RowProblem(3, "username", "The username 'JDoe' is already in row 2; a user can appear only once."),
        RowProblem(
            4,
            "type",
            "The type 'wizard' is not known; use PUPIL or TEACHER "
            "(or Administrator for a teacher who is an admin).",
        ),
        RowProblem(4, "is_admin", "is_admin must be true or false (or yes/no, 1/0), not 'maybe'."),
        RowProblem(5, "username", "The username is 65 characters long; the most is 64."),
        RowProblem(6, "first_name", "The first name is 101 characters long; the most is 100."),
        RowProblem(
            6,
            "teaching_classes",
            "The class name 'CCCCCCCCCCCCCCCCCCCC...' is 101 characters long; the most is 100.",
        ),
        RowProblem(
            7,
            "username",
            "The username contains ' '; use only letters, digits, dots, dashes and underscores.",
        ),
        RowProblem(8, "username", "The username is blank."),
        RowProblem(9, "is_admin", ONLY_TEACHERS),
        RowProblem(10, "is_admin", ONLY_TEACHERS),
        RowProblem(
            11, "is_admin", "The type 'Administrator' makes this user an admin, but is_admin says false."
        ),
        RowProblem(12, "password", "The password is 129 characters long; the most is 128."),
        RowProblem(
            13,
            None,
            "This row has 10 cells but the header has 8 columns. "
            "Is there a comma in a value that is not in quotes?",
        ),
        RowProblem(
            13,
            "type",
            "The type 'Jr' is not known; use PUPIL or TEACHER "
            "(or Administrator for a teacher who is an admin).",
        ),
        RowProblem(14, "username", "The username 'jdoe' is already in row 2; a user can appear only once."),
    )
    assert roster.rows[0] == roster_row(2, "jdoe", "Jane", "Doe", type=PUPIL, registration_class="3A")
    types_and_admin = {row.row_number: (row.type, row.is_admin) for row in roster.rows}
    assert [types_and_admin[n] for n in (4, 9, 10, 11)] == [
        (None, None),
        (PUPIL, True),
        (None, True),
        (TEACHER, True),
    ]


def test_empty_file() -> None:
    with pytest.raises(CsvError) as raised:
        read("empty.csv")

    assert raised.value.message == "The file is empty."


def test_excel_workbook_renamed_to_csv() -> None:
    with pytest.raises(CsvError) as raised:
        read("binary.xlsx.csv")

    assert raised.value.message == (
        f"This file is an Excel workbook (.xlsx) or another zip file, not a CSV file. {SAVE_AS_CSV}"
    )


def test_nul_bytes() -> None:
    with pytest.raises(CsvError) as raised:
        read("nul_bytes.csv")

    assert raised.value.message == (
        f"The file contains NUL bytes, so it is binary data, not a CSV file. {SAVE_AS_CSV}"
    )


# Decoding


@pytest.mark.parametrize(
    "data",
    [
        "username,first_name\r\nzoe,Zoë\r\n".encode(),
        b"\xef\xbb\xbf" + "username,first_name\r\nzoe,Zoë\r\n".encode(),
        "username,first_name\r\nzoe,Zoë\r\n".encode("cp1252"),
    ],
)
def test_utf8_with_or_without_bom_and_windows_1252_decode_alike(data: bytes) -> None:
    assert decode_upload(data, max_bytes=MAX_BYTES) == "username,first_name\r\nzoe,Zoë\r\n"


def test_file_at_the_size_limit_is_read_and_one_byte_more_is_refused() -> None:
    data = b"username\r\n" + b"a" * 990

    assert len(decode_upload(data, max_bytes=1000)) == 1000
    with pytest.raises(CsvError) as raised:
        decode_upload(data + b"a", max_bytes=1000)
    assert raised.value.message == "The file is larger than the limit of 1 KB. Split it into smaller files."


def test_size_limit_is_named_in_megabytes() -> None:
    with pytest.raises(CsvError, match=r"limit of 5 MB\."):
        decode_upload(b"u" * 5_000_001, max_bytes=5_000_000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00",
            f"This file is an old Excel workbook (.xls), not a CSV file. {SAVE_AS_CSV}",
        ),
        (b"%PDF-1.7\n%\xe2\xe3", f"This file is a PDF document, not a CSV file. {SAVE_AS_CSV}"),
        (
            "username\r\n".encode("utf-16"),
            f'This file is saved as UTF-16 ("Unicode Text"), not as CSV. {SAVE_AS_CSV}',
        ),
        (
            b"username\r\njdoe\r\nj\x01doe\r\n",
            f"Line 3 contains the control character U+0001, {LOOKS_BINARY}",
        ),
        (b"username\r\n\x1b[31m\r\n", f"Line 2 contains the control character U+001B, {LOOKS_BINARY}"),
        (
            b"\xef\xbb\xbfusername\r\nzo\xebe\r\n",
            f"The file is marked as UTF-8 but line 2 is not UTF-8. {SAVE_AS_CSV}",
        ),
        (b"username\r\n\x81\x8d\r\n", f"The file is neither UTF-8 nor Windows-1252 text. {SAVE_AS_CSV}"),
    ],
)
def test_binary_and_unreadable_files_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(CsvError) as raised:
        decode_upload(data, max_bytes=MAX_BYTES)

    assert raised.value.message == message


MIXED = f"Row 2 is UTF-8 but row 4 is Windows-1252, so the file mixes two encodings. {SAVE_AS_CSV}"


@pytest.mark.parametrize(
    "data",
    [
        (DATA / "mixed_utf8_windows1252.csv").read_bytes(),
        # A value on two lines is one row, and a blank row is a row, as the spreadsheet counts them.
        'username,first_name\r\nzoe.b,"Zoë\r\nAnn"\r\n\r\n'.encode() + "chloe.d,Chloë\r\n".encode("cp1252"),
    ],
)
def test_a_file_mixing_utf8_and_windows_1252_is_refused_naming_a_row_of_each(data: bytes) -> None:
    with pytest.raises(CsvError) as raised:
        decode_upload(data, max_bytes=MAX_BYTES)

    assert raised.value.message == MIXED


def test_tab_cr_and_lf_are_not_control_characters_here() -> None:
    text = decode_upload(b"username\tsurname\r\njdoe\tDoe\n", max_bytes=MAX_BYTES)

    assert text == "username\tsurname\r\njdoe\tDoe\n"


# Parsing


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("username,first_name,surname", ","),
        ("username;first_name;surname", ";"),
        ("username\tfirst_name\tsurname", "\t"),
        ("User Name;First Name, Middle;Surname", ";"),
        ("Username\tFirst Name\tLast Name", "\t"),
        ('"username","first_name","surname"', ","),
        ("username", ","),
    ],
)
def test_delimiter_is_sniffed_from_the_header(header: str, delimiter: str) -> None:
    roster = parse(f"{header}\r\njdoe{delimiter}Jane{delimiter}Doe\r\n")

    assert roster.delimiter == delimiter
    assert roster.rows[0].username == "jdoe"


def test_delimiter_is_not_fooled_by_data_rows() -> None:
    roster = parse("username;surname\r\njdoe;Doe, Jr\r\nasmith;Smith, Jr, III\r\n")

    assert roster.delimiter == ";"
    assert [row.surname for row in roster.rows] == ["Doe, Jr", "Smith, Jr, III"]


def test_unknown_headings_still_split_on_the_likely_delimiter() -> None:
    with pytest.raises(CsvError, match="its columns are 'Login', 'Vorname', 'Nachname'"):
        parse("Login;Vorname;Nachname\r\njdoe;Jane;Doe\r\n")


def test_header_after_blank_lines_keeps_spreadsheet_row_numbers() -> None:
    roster = parse("\r\n,,\r\nusername,surname\r\njdoe,Doe\r\n")

    assert roster.rows == (roster_row(4, "jdoe", surname="Doe"),)


def test_semicolon_header_after_rows_of_empty_cells() -> None:
    roster = parse(";;;\r\n ; ;\r\nusername;surname\r\njdoe;Doe, Jr\r\n")

    assert roster.delimiter == ";"
    assert roster.rows == (roster_row(4, "jdoe", surname="Doe, Jr"),)


def test_a_cell_too_long_to_read_is_refused() -> None:
    with pytest.raises(CsvError) as raised:
        parse("username,surname\r\njdoe," + "x" * 200_000 + "\r\n")

    assert raised.value.message == "Row 2 has a value far too long for a roster."


def test_row_limit() -> None:
    text = "username\r\na\r\n\r\nb\r\n"

    assert [row.username for row in parse(text, max_rows=2).rows] == ["a", "b"]
    with pytest.raises(CsvError) as raised:
        parse(text + "c\r\n", max_rows=2)
    assert raised.value.message == (
        "The file has more than 2 users; the limit is 2 rows. Split it into smaller files."
    )


def test_row_limit_is_named_with_thousands_separators() -> None:
    with pytest.raises(CsvError, match=r"more than 20,000 users; the limit is 20,000 rows\."):
        parse("username\n" + "".join(f"u{i}\n" for i in range(20_001)))


@pytest.mark.parametrize("text", ["", "\r\n\r\n", " , ,\r\n"])
def test_text_without_a_header_is_empty(text: str) -> None:
    with pytest.raises(CsvError, match=r"^The file is empty\.$"):
        parse(text)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            "username,user",
            "Columns A ('username') and B ('user') both give the username. Keep only one of them.",
        ),
        (
            "username,Class,Registration Class",
            (
                "Columns B ('Class') and C ('Registration Class') both give the registration class. "
                "Keep only one of them."
            ),
        ),
        (
            "username,surname,Last Name",
            "Columns B ('surname') and C ('Last Name') both give the surname. Keep only one of them.",
        ),
    ],
)
def test_duplicate_header_is_refused(header: str, message: str) -> None:
    with pytest.raises(CsvError) as raised:
        parse(f"{header}\r\njdoe,a,b\r\n")

    assert raised.value.message == message


def test_two_email_columns_are_refused() -> None:
    with pytest.raises(CsvError, match="both give the email"):
        parse("username,email,e-mail\r\njdoe,j@x.example,j@y.example\r\n")


def test_a_malformed_email_is_a_problem_of_its_cell() -> None:
    roster = parse(
        "username,type,email\r\nhill,Teacher,hill-at-school\r\npark,Teacher,park@school.example\r\n"
    )

    assert [(p.row_number, p.column) for p in roster.problems] == [(2, "email")]
    assert roster.rows[1].email == "park@school.example"


@pytest.mark.parametrize(
    ("heading", "field"),
    [
        ("first name", "first_name"),
        ("First Name", "first_name"),
        ("first-name", "first_name"),
        ("firstname", "first_name"),
        ("FIRST_NAME", "first_name"),
        ("last name", "surname"),
        ("last_name", "surname"),
        ("Surname", "surname"),
        ("class", "registration_class"),
        ("Registration Class", "registration_class"),
        ("Teaching classes", "teaching_classes"),
        ("Is Admin", "is_admin"),
        ("Admin", "is_admin"),
        ("Type", "type"),
        ("Password", "password"),
    ],
)
def test_heading_variants(heading: str, field: str) -> None:
    roster = parse(f"user,{heading}\r\njdoe,\r\n")

    assert roster.columns == frozenset({"username", field})


def test_values_under_a_column_without_heading_are_ignored_with_a_warning() -> None:
    roster = parse("username,,surname,\r\njdoe,note,Doe,\r\nasmith,,Smith,\r\n")

    assert roster.warnings == ("Column B has no heading; its values were ignored.",)
    assert roster.rows == (roster_row(2, "jdoe", surname="Doe"), roster_row(3, "asmith", surname="Smith"))


def test_rows_shorter_than_the_header_read_as_blank_cells() -> None:
    assert parse(f"{HEADER}\r\njdoe,Jane\r\n").rows == (roster_row(2, "jdoe", "Jane"),)


def test_quote_never_closed_is_refused_rather_than_swallowing_the_rest() -> None:
    with pytest.raises(CsvError) as raised:
        parse('username,surname\r\njdoe,Doe\r\nasmith,"Smith\r\nbking,King\r\n')

    assert raised.value.message == (
        'Row 3 opens a quoted value that is never closed. Check the quotes (") in that row: '
        "a value in quotes must end with a quote."
    )


def test_text_after_a_closing_quote_is_refused() -> None:
    with pytest.raises(CsvError, match=r"^Row 2 has text right after a closing quote\."):
        parse('username,surname\r\njdoe,"Doe" Jr\r\n')


@pytest.mark.parametrize(
    ("cell", "type", "is_admin"),
    [
        ("PUPIL", PUPIL, None),
        ("pupil", PUPIL, None),
        ("Student", PUPIL, None),
        ("TEACHER", TEACHER, None),
        ("teacher", TEACHER, None),
        ("Staff", TEACHER, None),
        ("Administrator", TEACHER, True),
        ("ADMIN", TEACHER, True),
        (" Teacher ", TEACHER, None),
        ("", None, None),
    ],
)
def test_type_values(cell: str, type: UserType | None, is_admin: bool | None) -> None:
    row = parse(f"username,type\r\njdoe,{cell}\r\n").rows[0]

    assert (row.type, row.is_admin, row.problems) == (type, is_admin, ())


@pytest.mark.parametrize(
    ("cell", "is_admin"),
    [
        ("true", True),
        ("TRUE", True),
        ("Yes", True),
        ("y", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("N", False),
        ("0", False),
        ("", None),
        ("  ", None),
    ],
)
def test_is_admin_values(cell: str, is_admin: bool | None) -> None:
    row = parse(f"username,type,is_admin\r\njdoe,TEACHER,{cell}\r\n").rows[0]

    assert (row.is_admin, row.problems) == (is_admin, ())


def test_teaching_classes_are_split_trimmed_and_deduplicated_keeping_the_first_spelling() -> None:
    row = parse('username,teaching_classes\r\njdoe," Maths 7A ;;maths 7a; Art  7B;MATHS 7A ;"\r\n').rows[0]

    assert row.teaching_classes == ("Maths 7A", "Art 7B")


def test_password_is_taken_exactly_as_typed() -> None:
    rows = parse('username,password\r\na, two words \r\nb,   \r\nc,\r\nd,"\'=x"\r\n').rows

    assert [row.password for row in rows] == [" two words ", None, None, "'=x"]


def test_username_is_trimmed_and_names_have_their_spaces_tidied() -> None:
    row = parse("username,first_name,surname\r\n  jdoe  ,  Mary  Ann , van der  Berg \r\n").rows[0]

    assert (row.username, row.first_name, row.surname) == ("jdoe", "Mary Ann", "van der Berg")


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_escaping_is_undone_on_import(start: str) -> None:
    cells = [f"'{start}jdoe", f"'{start}1+1", f"'{start}7A", f"'{start}Art"]
    text = "username,first_name,registration_class,teaching_classes\r\n" + ",".join(f'"{c}"' for c in cells)

    row = parse(text).rows[0]

    # Tab and CR are whitespace, which the trimming of values then removes.
    assert (row.username, row.first_name, row.registration_class, row.teaching_classes) == (
        f"{start}jdoe".strip(),
        f"{start}1+1".strip(),
        f"{start}7A".strip(),
        (f"{start}Art".strip(),),
    )


def test_a_leading_quote_before_ordinary_text_is_kept() -> None:
    assert parse("username,surname\r\njdoe,'Ofa\r\n").rows[0].surname == "'Ofa"


# Export


def test_export_bytes() -> None:
    data = export_roster(
        [
            export_row(
                "amurphy",
                "Aoife",
                "Murphy",
                type=TEACHER,
                is_admin=True,
                teaching_classes=("b Maths", "A Maths", "C Art"),
            ),
            export_row("bsmith", "Ben", "Smith, Jr", registration_class="7A", teaching_classes=("A Maths",)),
        ]
    )

    assert data == (
        b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n"
        b"amurphy,Aoife,Murphy,TEACHER,,A Maths;b Maths;C Art,true,,\r\n"
        b'bsmith,Ben,"Smith, Jr",PUPIL,7A,A Maths,false,,\r\n'
    )


def test_export_of_no_users_is_the_template() -> None:
    assert export_roster([]) == b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n"


def test_export_streams_bom_and_header_first_then_a_line_per_user() -> None:
    lines = list(export_lines(iter([export_row("a"), export_row("b", "Zoë")])))

    assert lines == [
        b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n",
        b"a,Ann,Lee,PUPIL,,,false,,\r\n",
        "b,Zoë,Lee,PUPIL,,,false,,\r\n".encode(),
    ]


@pytest.mark.parametrize(
    ("name", "cell"),
    [
        ("=1+1", b"'=1+1"),
        ("+1", b"'+1"),
        ("-Smith", b"'-Smith"),
        ("@SUM(A1)", b"'@SUM(A1)"),
        ("\tX", b"'\tX"),
        ("\rX", b'"\'\rX"'),
        ("=cmd|' /C calc'!A0", b"'=cmd|' /C calc'!A0"),
        ("'=x", b"''=x"),
        ("O'Brien", b"O'Brien"),
        ("Smith-Jones", b"Smith-Jones"),
    ],
)
def test_export_escapes_cells_a_spreadsheet_would_run_as_formulas(name: str, cell: bytes) -> None:
    data = export_roster([export_row("jdoe", surname=name)])

    assert data.split(b"\r\n")[1] == b"jdoe,Ann," + cell + b",PUPIL,,,false,,"


def test_export_escapes_every_text_column() -> None:
    user = export_row(
        "-jdoe", "=A", "+B", registration_class="@C", teaching_classes=("-D", "E"), email="=F@school.example"
    )

    data = export_roster([user])

    assert data.split(b"\r\n")[1] == b"'-jdoe,'=A,'+B,PUPIL,'@C,'-D;E,false,'=F@school.example,"


# Round trip


def test_export_then_import_gives_back_the_same_values() -> None:
    users = [
        export_row(
            "x.hacker",
            "=cmd|' /C calc'!A0",
            "-Smith",
            registration_class="=7A",
            teaching_classes=("@home", "+plus"),
        ),
        export_row("zoe", "Zoë", "@home", teaching_classes=("Art 7A", "art 7B", "Music")),
        export_row("obrien", "Seán", "O'Brien", type=TEACHER, is_admin=True),
        export_row("nguyen", "Nguyễn", "Văn An", type=TEACHER, registration_class="Form 7 Ü"),
        export_row("comma", "Ann, Marie", "Lee, Jr"),
        export_row("quote", 'Bob "the builder"', '"Quoted"'),
        export_row("-dash", "'=x", "''@y", registration_class="'Quote"),
        export_row("semi", "A;B", "C;D"),
        export_row("blank", "", ""),
    ]

    roster = parse_roster(decode_upload(export_roster(users), max_bytes=MAX_BYTES), max_rows=MAX_ROWS)

    assert roster.columns == frozenset(COLUMNS)
    assert roster.warnings == ()
    assert roster.rows == tuple(
        roster_row(
            number,
            user.username,
            user.first_name,
            user.surname,
            type=user.type,
            is_admin=user.is_admin,
            registration_class=user.registration_class,
            teaching_classes=tuple(sorted(user.teaching_classes, key=str.casefold)),
        )
        for number, user in enumerate(users, start=2)
    )


# The name rules (db.names), cell by cell


@pytest.mark.parametrize(
    ("column", "value", "character"),
    [
        ("first_name", "Zo\u202eë", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("surname", "Br\u200bown", "U+200B (ZERO WIDTH SPACE)"),
        ("registration_class", "\ufeffP3", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
        ("teaching_classes", "Art\U000e0041", "U+E0041 (TAG LATIN CAPITAL LETTER A)"),
        ("first_name", "Amy\u2066", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
    ],
)
def test_invisible_formatting_characters_in_a_name_are_a_problem_of_its_cell(
    column: str, value: str, character: str
) -> None:
    roster = parse(f"username,{column}\r\namy.b,{value}\r\n")

    [problem] = roster.problems
    assert (problem.row_number, problem.column) == (2, column)
    assert f"contains an invisible formatting character, {character}; remove it" in problem.message


def test_names_are_read_in_nfc_and_classes_folded_to_one() -> None:
    roster = parse("username,first_name,teaching_classes\r\nzoe.b,Zoe\u0308,P3;\u04203;p3;Ｐ３\r\n")

    assert roster.rows[0].first_name == "Zoë"
    assert roster.rows[0].teaching_classes == ("P3",)

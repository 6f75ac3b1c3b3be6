"""Property-based fuzzing of every parser of caller input, called directly (no database, no HTTP): cursors,
JSON bodies, multipart maps, SCIM filters, list parameters and PATCH requests, and roster CSV files.

Whatever the input, a parser either reads it or refuses it with its own error; nothing else escapes, what it
accepts is something PostgreSQL can store, and its error messages quote only a short prefix of the input.
Generation is derandomized, so a run is repeatable; the strategies lean on what broke before (NUL, lone
surrogates, numbers of thousands of digits, deep nesting, thousands of terms).
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql
from strawberry.exceptions import StrawberryInputCoercionError

from db import rostering
from db.changes import _decode as decode_feed_cursor
from db.errors import DomainError
from db.imports.roster_csv import CsvError, decode_upload, parse_roster
from db.models import UserType
from db.pagination import decode_cursor
from db.text import BIGINT_MAX, ECHO_LIMIT, offset_time, plain_bigint, shown, storable
from db.users import (
    ORDERINGS,
    OTHER_LIST,
    KeyKind,
    UserFilter,
    UserOrder,
    UserOrderField,
    cursor_scope,
    cursor_tag,
)
from gql import compiled_sql as roster_sql
from gql.schema import DATE_TIME
from oneroster import resources as oneroster_resources
from oneroster.filter import OPERATORS as ONEROSTER_OPERATORS
from oneroster.filter import Comparison as OneRosterComparison
from oneroster.filter import parse_filter as parse_oneroster_filter
from oneroster.filter import render as render_oneroster_filter
from oneroster.protocol import OneRosterError
from oneroster.protocol import list_query as oneroster_list_query
from oneroster.query import list_statement as oneroster_statement
from scim import groups as scim_groups
from scim import users as scim_users
from scim.filter import (
    Compare,
    Filter,
    FilterSyntaxError,
    Logical,
    Not,
    ValuePath,
    matches,
    parse_filter,
    parse_path,
)
from scim.patch import patched
from scim.protocol import MAX_COUNT, PATCH_OP, ScimError
from scim.query import MAX_WHOLE, list_query
from web.bodies import MAX_DEPTH, BadBody, nesting_depth, place_files, read_json

FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None)
# An error message is its own words plus at most ECHO_LIMIT characters of the input (and an ellipsis).
MESSAGE_MAX = 200 + ECHO_LIMIT

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
CHARACTERS = st.one_of(st.characters(), SURROGATES, st.sampled_from(["\x00", '"', "\\", "[", "(", " "]))
TEXT = st.text(CHARACTERS, max_size=20)
DIGITS = st.integers(1, 6000).map(lambda n: "9" * n)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
DEPTHS = st.integers(0, 5000)


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


# Cursors

CURSOR_PARSERS: Sequence[tuple[Callable[[Any], Any], ...]] = (
    (str, uuid.UUID),
    (offset_time, uuid.UUID),
    (UserType, uuid.UUID),
)


# Times at the calendar's edges with every offset: some leave it once moved to UTC (0001-01-01T00:00+14:00).
def hours_minutes(minutes: int) -> str:
    return f"{minutes // 60:02}:{minutes % 60:02}"


MINUTES = st.integers(0, 1439)
CLOCKS = st.sampled_from(["00:00:00", "00:30", "13:59:59", "23:59:59.999999", "10:00"])
TIMES = st.one_of(
    st.builds(lambda clock, minutes: f"0001-01-01T{clock}+{hours_minutes(minutes)}", CLOCKS, MINUTES),
    st.builds(lambda clock, minutes: f"9999-12-31T{clock}-{hours_minutes(minutes)}", CLOCKS, MINUTES),
    st.builds(
        lambda day, clock, offset: f"{day}T{clock}{offset}",
        st.sampled_from(["0001-01-01", "0001-01-02", "9999-12-31", "9999-12-30", "2026-12-02"]),
        CLOCKS,
        st.sampled_from(["", "Z", "+00:00", "+24:00", "-14:00", "+14:00", "-23:59"]),
    ),
)
# Numbers as int() reads them but the server never writes them, and beyond bigint.
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 2**64).map(lambda n: f"{n:_}"),
    st.integers(0, 99).map(
        lambda n: str(n).translate(
            str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
        )
    ),
    st.sampled_from([" 1", "1 ", "+1", "01", "00", "-0", "1\n", str(BIGINT_MAX), str(BIGINT_MAX + 1)]),
    DIGITS,
)
CURSOR_TEXT = st.one_of(
    JSON.map(json.dumps),
    st.lists(SCALARS, min_size=2, max_size=2).map(json.dumps),
    DEPTHS.map(nested_list),
    DIGITS.map(lambda digits: f'["{uuid.uuid4()}", {digits}]'),
    TIMES.map(lambda time: json.dumps([time, str(uuid.uuid4())])),
)
FEED_CURSOR_TEXT = st.one_of(
    st.builds(lambda xid, position, issued: json.dumps([xid, position, issued]), NUMBERS, NUMBERS, TIMES),
    CURSOR_TEXT,
)


def fits_postgres(value: Any) -> bool:
    """What a parser accepted is something asyncpg can send: text PostgreSQL stores, a bigint, a time that
    stays in the calendar once moved to UTC."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, int):
        return 0 <= value <= BIGINT_MAX
    if isinstance(value, datetime):
        value.astimezone(UTC)  # raises when it leaves the calendar
    return True


def as_cursor(text: str) -> str:
    return urlsafe_b64encode(text.encode(errors="surrogatepass")).decode().rstrip("=")


@FAST
@given(cursor=st.one_of(CURSOR_TEXT.map(as_cursor), st.text(max_size=40)), index=st.integers(0, 2))
def test_a_cursor_is_read_or_refused_as_invalid_input(cursor: str, index: int) -> None:
    try:
        values = decode_cursor(cursor, parse=CURSOR_PARSERS[index])
    except DomainError as error:
        assert [problem.field for problem in error.problems] == ["after"]
        return
    assert len(values) == 2 and isinstance(values[1], uuid.UUID)
    assert fits_postgres(values[0])


@FAST
@given(cursor=FEED_CURSOR_TEXT.map(as_cursor))
def test_a_change_feed_cursor_is_read_or_refused_as_invalid_input(cursor: str) -> None:
    try:
        point, issued = decode_feed_cursor(cursor)
    except DomainError as error:
        assert [problem.field for problem in error.problems] == ["after"]
        return
    assert fits_postgres(point.xid) and fits_postgres(point.position) and fits_postgres(issued)
    assert issued.tzinfo is not None


@FAST
@given(text=NUMBERS)
def test_a_number_is_read_only_as_the_server_writes_it(text: str) -> None:
    try:
        number = plain_bigint(text)
    except ValueError as error:
        assert len(str(error)) <= MESSAGE_MAX
        return
    assert str(number) == text and fits_postgres(number)


@FAST
@given(value=st.one_of(TIMES, TEXT, SCALARS))
def test_a_date_time_variable_is_read_or_refused_as_a_bad_value(value: Any) -> None:
    read = DATE_TIME.parse_value
    assert read is not None
    try:
        time = read(value)
    except StrawberryInputCoercionError:
        return
    assert isinstance(time, datetime) and fits_postgres(time)


def tagged(field: UserOrderField) -> st.SearchStrategy[str]:
    """Cursors that carry the tag of the users table in `field` order (with its default filter), whatever else
    they hold: past the tag, the values themselves are read or refused. Half of them have one value of the
    right kind for each sort key (text that may not be storable, a time with or without its offset)."""
    tag = cursor_tag(cursor_scope(UserOrder(field=field), UserFilter()))
    times = st.sampled_from(["2024-09-01T08:30:00+00:00", "2024-09-01T08:30:00.123456-05:00", "2024-09-01"])
    kinds = {
        KeyKind.TEXT: st.one_of(TEXT, st.just("brown")),
        KeyKind.TIME: times,
        KeyKind.TYPE: st.just("PUPIL"),
    }
    shaped = st.tuples(*(kinds[key.kind] for key in ORDERINGS[field])).map(list)
    keys = len(ORDERINGS[field])
    anything = st.integers(keys - 1, keys + 1).flatmap(lambda n: st.lists(SCALARS, min_size=n, max_size=n))
    ids = st.one_of(st.uuids().map(str), SCALARS)
    values = st.one_of(shaped, anything)
    return st.tuples(values, ids).map(lambda parts: json.dumps([tag, *parts[0], parts[1]])).map(as_cursor)


@FAST
@given(data=st.data(), field=st.sampled_from(list(UserOrderField)), backward=st.booleans())
def test_the_compiled_read_path_reads_a_cursor_or_hands_it_back(
    data: st.DataObject, field: UserOrderField, backward: bool
) -> None:
    cursor = data.draw(st.one_of(CURSOR_TEXT.map(as_cursor), tagged(field)))
    paging: dict[str, Any] = (
        {"first": None, "after": None, "last": 1, "before": cursor}
        if backward
        else {"first": 1, "after": cursor}
    )
    try:
        page = roster_sql.users_page(UserFilter(), UserOrder(field=field), **paging)
    except DomainError as error:  # the compiled path hands it to the general one, which refuses it
        assert [problem.field for problem in error.problems] == ["before" if backward else "after"]
        return
    position = page.before if backward else page.after
    assert position is not None and isinstance(position.id, uuid.UUID)
    assert len(position.values) == len(ORDERINGS[field])
    for value in position.values:
        assert isinstance(value, str | UserType) and storable(value) or isinstance(value, datetime)
        assert not isinstance(value, datetime) or value.tzinfo is not None


@FAST
@given(field=st.sampled_from(list(UserOrderField)), other=st.sampled_from(list(UserOrderField)))
def test_a_cursor_is_refused_by_any_other_ordering(field: UserOrderField, other: UserOrderField) -> None:
    values = [
        "PUPIL" if key.kind == KeyKind.TYPE else "2024-09-01T08:30:00+00:00" for key in ORDERINGS[field]
    ]
    tag = cursor_tag(cursor_scope(UserOrder(field=field), UserFilter()))
    cursor = as_cursor(json.dumps([tag, *values, str(uuid.uuid4())]))
    for order in (UserOrder(field=other), UserOrder(field=other, descending=True)):
        if order == UserOrder(field=field):
            assert roster_sql.users_page(UserFilter(), order, 1, cursor).after is not None
            continue
        try:
            roster_sql.users_page(UserFilter(), order, 1, cursor)
        except DomainError as error:
            assert error.problems[0].message == OTHER_LIST
        else:
            raise AssertionError(f"a {field} cursor was read in {order}")


# Echoing input: every error message quotes it through shown

UNSAFE = {*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


@FAST
@given(text=st.one_of(TEXT, st.text(st.characters(codec=None), max_size=200)))
def test_input_is_shown_short_and_without_a_control_character(text: str) -> None:
    quoted = shown(text)
    assert len(quoted) <= ECHO_LIMIT + 1
    assert not any(ord(c) in UNSAFE or 0xD800 <= ord(c) <= 0xDFFF for c in quoted), repr(quoted)
    assert quoted == text or "\\" in quoted or quoted.endswith("…")


# JSON bodies (/graphql and /scim/v2)

BODIES = st.one_of(
    st.binary(max_size=60),
    JSON.map(json.dumps),
    DEPTHS.map(nested_list),
    DEPTHS.map(lambda depth: '{"a": ' * depth + "1" + "}" * depth),
    DIGITS.map(lambda digits: '{"a": ' + digits + "}"),
    st.sampled_from(['{"a": NaN}', "[Infinity]", "-Infinity", '"\\udc00"', '{"\\ud800": 1}']),
)


@FAST
@given(body=BODIES)
def test_a_json_body_is_read_or_refused(body: str | bytes) -> None:
    try:
        found = read_json(body)
    except BadBody as error:
        assert len(str(error)) < MESSAGE_MAX
        return
    assert nesting_depth(found) <= MAX_DEPTH
    json.dumps(found, ensure_ascii=False, allow_nan=False).encode()


# Multipart maps

PATH_PARTS = st.sampled_from(
    ["variables", "file", "files", "list", "query", "0", "1", "5", "x", "", "-1", "²"]
)
PATHS = st.lists(PATH_PARTS, min_size=1, max_size=4).map(".".join)
FILE_MAPS = st.one_of(
    JSON,
    st.dictionaries(
        st.sampled_from(["0", "1", "2"]), st.one_of(st.lists(PATHS, max_size=3), JSON), max_size=3
    ),
)
OPERATIONS = st.one_of(
    st.just({"query": "q", "variables": {"file": None, "files": [None, None], "list": "x"}}),
    st.just([{"query": "q", "variables": {"file": None}}]),
    JSON,
)
FILES = {"0": "the first file", "1": "the second file"}


@FAST
@given(operations=OPERATIONS, files_map=FILE_MAPS)
def test_a_multipart_map_places_its_files_or_is_refused(operations: Any, files_map: Any) -> None:
    before = json.dumps(operations)
    try:
        placed = place_files(operations, files_map, FILES)
    except BadBody as error:
        assert len(str(error)) < MESSAGE_MAX
        return
    assert json.dumps(operations) == before  # the caller's document is never changed in place
    assert type(placed) is type(operations)


# SCIM filters

ATTRIBUTES = st.sampled_from(
    [
        "userName",
        "name.givenName",
        "externalId",
        "active",
        "meta.created",
        "id",
        "groups",
        "groups.value",
        "emails",
        "value",
        "type",
        "x",
        "members.value",
        "displayName",
    ]
)
OPERATORS = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "EQ", "xx"])
VALUES = st.one_of(
    TEXT.map(json.dumps),
    st.integers().map(str),
    DIGITS,
    DIGITS.map(lambda d: f"1e{d}"),
    st.sampled_from(["true", "false", "null", "2.5", "-0", '"2026-01-01T00:00:00"', '"\\x"']),
)
COMPARISONS = st.one_of(
    st.builds("{} {} {}".format, ATTRIBUTES, OPERATORS, VALUES), ATTRIBUTES.map("{} pr".format)
)
FILTERS = st.recursive(
    COMPARISONS,
    lambda inner: st.one_of(
        st.builds("{} {} {}".format, inner, st.sampled_from(["and", "or", "AND"]), inner),
        inner.map("({})".format),
        inner.map("not ({})".format),
        st.builds("{}[{}]".format, ATTRIBUTES, inner),
    ),
    max_leaves=8,
)
WRAPPERS = st.sampled_from([("(", ")"), ("not(", ")"), ("groups[", "]")])
FILTER_TEXT = st.one_of(
    FILTERS,
    st.text(CHARACTERS, max_size=40),
    st.builds(
        lambda depth, wrap, inner: wrap[0] * depth + inner + wrap[1] * depth, DEPTHS, WRAPPERS, COMPARISONS
    ),
    st.builds(
        lambda count, joiner, inner: f" {joiner} ".join([inner] * count),
        st.integers(1, 3000),
        st.sampled_from(["and", "or"]),
        COMPARISONS,
    ),
)


def values_in(found: Filter) -> list[Any]:
    match found:
        case Compare(_, _, value):
            return [value]
        case Logical(_, left, right):
            return values_in(left) + values_in(right)
        case Not(inner) | ValuePath(_, inner):
            return values_in(inner)
    raise AssertionError(found)


@FAST
@given(text=FILTER_TEXT)
def test_a_scim_filter_is_parsed_into_sql_or_refused(text: str) -> None:
    try:
        parsed = parse_filter(text)
    except FilterSyntaxError as error:
        assert len(str(error)) < MESSAGE_MAX
        return
    assert all(storable(value) for value in values_in(parsed) if isinstance(value, str))
    assert matches(parsed, {"value": "x", "type": "work", "display": None}) in (True, False)
    for table in (scim_users.TABLE, scim_groups.TABLE):
        try:
            condition = table.condition(parsed)
        except ScimError as error:
            assert error.status == 400 and len(error.detail) < MESSAGE_MAX
            continue
        str(condition.compile(dialect=postgresql.dialect()))


LIST_PARAMETERS = st.sampled_from(
    ["filter", "startIndex", "count", "sortBy", "sortOrder", "attributes", "excludedAttributes", "STARTINDEX"]
)
NUMBERS = st.one_of(st.integers().map(str), DIGITS, st.text("0123456789-+ ²٣", max_size=12), st.integers())


@FAST
@given(params=st.dictionaries(LIST_PARAMETERS, st.one_of(NUMBERS, JSON, FILTER_TEXT), max_size=4))
def test_a_scim_list_request_is_read_or_refused(params: dict[str, Any]) -> None:
    try:
        asked = list_query(params)
    except ScimError as error:
        assert error.status == 400 and len(error.detail) < MESSAGE_MAX
        return
    assert 1 <= asked.start_index <= MAX_WHOLE and 0 <= asked.count <= MAX_COUNT


# SCIM PATCH

PATCH_PATHS = st.one_of(
    ATTRIBUTES,
    st.builds("{}[{}]".format, ATTRIBUTES, FILTERS),
    st.builds("{}[{}].{}".format, ATTRIBUTES, FILTERS, st.sampled_from(["value", "display", "x", "value.x"])),
    st.text(CHARACTERS, max_size=30),
    st.builds(lambda depth, inner: "members[" + "(" * depth + inner + ")" * depth + "]", DEPTHS, COMPARISONS),
    st.sampled_from(["name.givenName", "urn:ietf:params:scim:schemas:core:2.0:User:userName", "members"]),
)
OPS = st.one_of(st.sampled_from(["add", "replace", "remove", "Replace", "move"]), JSON)
OPERATION = st.fixed_dictionaries({"op": OPS}, optional={"path": st.one_of(PATCH_PATHS, JSON), "value": JSON})
PATCHES = st.one_of(
    st.builds(
        lambda operations: {"schemas": [PATCH_OP], "Operations": operations}, st.lists(OPERATION, max_size=3)
    ),
    JSON,
)
USER_DOCUMENT = {
    "userName": "amy.b",
    "name": {"givenName": "Amy", "familyName": None},
    "userType": "Pupil",
    "active": True,
    "externalId": None,
}
GROUP_DOCUMENT = {
    "displayName": "7A",
    "externalId": "e-7a",
    "members": [{"value": str(uuid.UUID(int=1)), "type": "User"}],
}


@FAST
@given(path=PATCH_PATHS)
def test_a_patch_path_is_parsed_or_refused(path: str) -> None:
    try:
        parse_path(path)
    except FilterSyntaxError as error:
        assert len(str(error)) < MESSAGE_MAX


@FAST
@given(request=PATCHES, groups=st.booleans())
def test_a_patch_request_gives_a_document_or_is_refused(request: Any, groups: bool) -> None:
    shape, current = (scim_groups.SHAPE, GROUP_DOCUMENT) if groups else (scim_users.SHAPE, USER_DOCUMENT)
    try:
        found = patched(current, request, shape)
        if not groups:
            wanted = scim_users._wanted(found)  # what a patched user document must pass before it is written
            assert storable(wanted.external_id or "")
    except ScimError as error:
        assert error.status == 400 and len(error.detail) < MESSAGE_MAX
    except DomainError:
        pass  # a user name or a name the domain refuses, as it would from GraphQL


# Roster CSV files

HEADERS = [
    "username",
    "first name",
    "surname",
    "type",
    "registration class",
    "teaching classes",
    "admin",
    "password",
    "Username",
    "",
]
CELLS = st.one_of(
    TEXT.map(lambda text: text.encode(errors="replace").decode()),
    st.sampled_from(["PUPIL", "teacher", "yes", "7A; 7B", "=1+1", '"', "\r\n"]),
)
ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "cp1252", "utf-16", "latin-1"])


@st.composite
def roster_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(HEADERS), min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELLS, max_size=len(header) + 1), max_size=5))
    written = io.StringIO()
    csv.writer(written, delimiter=draw(st.sampled_from([",", ";", "\t"]))).writerows([header, *rows])
    return written.getvalue().encode(draw(ENCODINGS), errors="replace")


@FAST
@given(data=st.one_of(st.binary(max_size=300), roster_files()))
def test_any_bytes_are_a_roster_or_a_clear_file_error(data: bytes) -> None:
    try:
        roster = parse_roster(decode_upload(data, max_bytes=10_000), max_rows=50)
    except CsvError as error:
        assert error.message
        return
    for row in roster.rows:
        texts = [
            row.username,
            row.first_name,
            row.surname,
            row.registration_class or "",
            row.password or "",
            *row.teaching_classes,
        ]
        assert all(storable(text) for text in texts)


# OneRoster filters and list parameters.

_OR_TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=20)
_OR_COMPARISONS = st.builds(
    OneRosterComparison,
    st.sampled_from(sorted(oneroster_resources.USERS.paths)),
    st.sampled_from(ONEROSTER_OPERATORS),
    _OR_TEXT,
)
_OR_FILTERS = st.lists(
    st.lists(_OR_COMPARISONS, min_size=1, max_size=4).map(tuple), min_size=1, max_size=4
).map(tuple)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(found=_OR_FILTERS)
def test_a_oneroster_filter_reads_back_as_written(found: Any) -> None:
    assert parse_oneroster_filter(render_oneroster_filter(found)) == found


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(
    raw=st.one_of(
        st.text(max_size=200),
        _OR_FILTERS.map(render_oneroster_filter).flatmap(
            lambda text: st.integers(0, len(text)).map(lambda cut: text[:cut])
        ),
    ),
    limit=st.one_of(st.none(), st.text(max_size=8)),
    sort=st.one_of(st.none(), st.text(max_size=30)),
)
def test_oneroster_list_parameters_are_read_or_refused_with_a_400(
    raw: str, limit: str | None, sort: str | None
) -> None:
    params = {
        "filter": raw,
        **({"limit": limit} if limit is not None else {}),
        **({"sort": sort} if sort else {}),
    }
    year = rostering.school_year(datetime(2026, 12, 1).date(), 8, 31)
    context = rostering.Roster(
        uuid.uuid4(),
        year,
        rostering.session_ids(uuid.uuid4(), year),
        "S",
        "s",
        datetime(2026, 1, 1),
        "MANUAL",
    )
    try:
        asked = oneroster_list_query(params, oneroster_resources.USERS)
        statement = oneroster_statement(
            oneroster_resources.USERS, oneroster_resources.USERS.source(context), asked, "", None
        )
    except OneRosterError as error:  # unreadable, or a value of the wrong kind (a date that is not one)
        assert error.status == 400 and len(error.description) < 400
        return
    # what is read compiles to SQL with every value bound, never spliced in
    compiled = statement.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    bound = [str(value) for value in compiled.params.values()]
    for conjunction in asked.filter or ():
        for comparison in conjunction:
            if (
                comparison.value not in ("true", "false")
                and oneroster_resources.USERS.paths[comparison.field] == oneroster_resources.Kind.STRING
            ):
                assert any(
                    comparison.value.replace("%", "\\%").replace("_", "\\_") in value
                    or comparison.value in value
                    for value in bound
                ), comparison

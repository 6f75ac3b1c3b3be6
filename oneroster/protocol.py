"""OneRoster 1.2's protocol: the status-info payload of errors, and the paging, sorting, projection and filter
parameters of a list (section 3.4 of the REST binding)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from db.text import shown, storable
from oneroster.filter import Filter, FilterSyntaxError, parse_filter
from oneroster.resources import Resource

DEFAULT_LIMIT = 100
# Consumers ask for 5,000 and 10,000 at once; a larger limit is answered with this many and a `next` link.
MAX_LIMIT = 10_000
MAX_OFFSET = 10_000_000


class OneRosterError(Exception):
    """An answer other than success, as OneRoster's imsx_StatusInfo (codeMajor failure, severity error)."""

    def __init__(self, status: int, description: str, code_minor: str) -> None:
        super().__init__(description)
        self.status, self.description, self.code_minor = status, description, code_minor

    def body(self) -> dict[str, Any]:
        return status_info(self.description, self.code_minor)


def status_info(description: str, code_minor: str) -> dict[str, Any]:
    return {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": code_minor}
            ]
        },
    }


def bad_request(description: str, code_minor: str = "invaliddata") -> OneRosterError:
    return OneRosterError(400, description, code_minor)


def unknown_object(what: str, sourced_id: str) -> OneRosterError:
    return OneRosterError(
        404, f"There is no {what} with the sourcedId '{shown(sourced_id)}'.", "unknownobject"
    )


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: tuple[str, ...] = ()
    descending: bool = False
    fields: tuple[str, ...] | None = None
    filter: Filter | None = None


def _integer(params: Mapping[str, str], name: str, default: int, least: int, most: int | None) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise bad_request(f"{name} must be a whole number of at least {least}.", "invalid_selection_field")
    value = int(text)
    if value < least:
        raise bad_request(f"{name} must be a whole number of at least {least}.", "invalid_selection_field")
    return value if most is None else min(value, most)


def _names(raw: str, what: str, code_minor: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in raw.split(","))
    if not raw.strip() or any(not name for name in names):
        raise bad_request(f"{what} is a comma-separated list of field names.", code_minor)
    return names


def fields_of(params: Mapping[str, str], resource: Resource) -> tuple[str, ...] | None:
    raw = params.get("fields")
    if raw is None:
        return None
    names = _names(raw, "fields", "invalid_blank_selection_field")
    unknown = [name for name in names if name not in resource.by_name]
    if unknown:
        raise bad_request(
            f"{resource.collection} have no field '{shown(unknown[0])}'.", "invalid_selection_field"
        )
    return tuple(dict.fromkeys(names))


def list_query(params: Mapping[str, str], resource: Resource) -> ListQuery:
    limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(params, "offset", 0, 0, None)
    if offset > MAX_OFFSET:
        raise bad_request(f"offset is at most {MAX_OFFSET}.", "invalid_selection_field")
    sort: tuple[str, ...] = ()
    if (raw_sort := params.get("sort")) is not None:
        sort = _names(raw_sort, "sort", "invalid_sort_field")
        for name in sort:
            if name not in resource.paths:
                raise bad_request(
                    f"{resource.collection} cannot be sorted by '{shown(name)}'.", "invalid_sort_field"
                )
    order = params.get("orderBy", "asc")
    if order not in ("asc", "desc"):
        raise bad_request("orderBy is asc or desc.", "invalid_sort_field")
    found: Filter | None = None
    if (raw_filter := params.get("filter")) is not None:
        if not storable(raw_filter):
            raise bad_request("The filter contains characters that cannot be stored.", "invalid_filter_field")
        try:
            found = parse_filter(raw_filter)
        except FilterSyntaxError as error:
            raise bad_request(f"The filter cannot be read: {error}", "invalid_filter_field") from None
        for conjunction in found:
            for comparison in conjunction:
                if comparison.field not in resource.paths:
                    raise bad_request(
                        f"{resource.collection} cannot be filtered on '{shown(comparison.field)}'.",
                        "invalid_filter_field",
                    )
    return ListQuery(
        limit=limit,
        offset=offset,
        sort=sort,
        descending=order == "desc",
        fields=fields_of(params, resource),
        filter=found,
    )

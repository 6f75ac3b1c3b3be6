"""SCIM PATCH on its own: every form Microsoft Entra ID and Okta send, and every refusal, without a database.

The bodies are the ones their provisioning services send (Entra: capitalised ops, removal of members by value,
attributes Rollcall does not keep; Okta: a path-less replace carrying the id, members removed by filter).
"""

from __future__ import annotations

from typing import Any

import pytest

from scim.groups import SHAPE as GROUP
from scim.patch import document, patched
from scim.protocol import PATCH_OP, ScimError
from scim.users import SHAPE as USER

USER_NOW: dict[str, Any] = {
    "userName": "ava.k",
    "active": True,
    "externalId": "e-1",
    "name": {"givenName": "Ava", "familyName": "Khan"},
}
GROUP_NOW: dict[str, Any] = {"displayName": "7A", "members": [{"value": "u-1"}, {"value": "u-2"}]}


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def refusal(current: dict[str, Any], request: Any, shape: Any = USER) -> tuple[int, str | None, str]:
    with pytest.raises(ScimError) as refused:
        patched(current, request, shape)
    return refused.value.status, refused.value.scim_type, refused.value.detail


# Microsoft Entra ID


def test_entra_replaces_attributes_by_path_with_capitalised_ops() -> None:
    after = patched(
        USER_NOW,
        patch(
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "path": "name.givenName", "value": "Eva"},
            {"op": "Add", "path": "externalId", "value": "e-2"},
        ),
        USER,
    )
    assert after == {
        **USER_NOW,
        "active": "False",
        "externalId": "e-2",
        "name": {"givenName": "Eva", "familyName": "Khan"},
    }


def test_entra_attributes_rollcall_does_not_keep_are_ignored() -> None:
    after = patched(
        USER_NOW,
        patch(
            {
                "op": "Replace",
                "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "value": "Year 7",
            },
            {"op": "Add", "path": "displayName", "value": "Ava Khan"},
        ),
        USER,
    )
    assert after == USER_NOW


def test_entra_sets_a_work_email_the_user_did_not_have() -> None:
    after = patched(
        USER_NOW,
        patch({"op": "Add", "path": 'emails[type eq "work"].value', "value": "ava@example.org"}),
        USER,
    )
    assert after == {**USER_NOW, "emails": [{"type": "work", "value": "ava@example.org"}]}


def test_entra_names_attributes_with_the_core_schema_and_in_any_case() -> None:
    after = patched(
        USER_NOW,
        patch(
            {
                "op": "Replace",
                "path": "urn:ietf:params:scim:schemas:core:2.0:User:userName",
                "value": "eva.k",
            },
            {"op": "replace", "path": "NAME.FAMILYNAME", "value": "Khan-Ali"},
        ),
        USER,
    )
    assert (after["userName"], after["name"]["familyName"]) == ("eva.k", "Khan-Ali")


def test_entra_adds_members_and_removes_them_by_value() -> None:
    after = patched(
        GROUP_NOW,
        patch(
            {"op": "Add", "path": "members", "value": [{"value": "u-3"}, {"value": "U-1"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "u-2"}]},
        ),
        GROUP,
    )
    assert after["members"] == [{"value": "u-1"}, {"value": "u-3"}]


def test_entra_replaces_a_group_name_by_path() -> None:
    after = patched(GROUP_NOW, patch({"op": "Replace", "path": "displayName", "value": "7B"}), GROUP)
    assert after == {**GROUP_NOW, "displayName": "7B"}


# Okta


def test_okta_deactivates_with_a_pathless_replace_that_carries_the_id() -> None:
    after = patched(USER_NOW, patch({"op": "replace", "value": {"id": "abc", "active": False}}), USER)
    assert after == {**USER_NOW, "active": False}


def test_okta_pathless_replace_of_the_name_merges_its_parts() -> None:
    after = patched(
        USER_NOW,
        patch(
            {
                "op": "replace",
                "value": {"userName": "eva.k", "name": {"givenName": "Eva"}, "password": "river-stone"},
            }
        ),
        USER,
    )
    assert after == {
        **USER_NOW,
        "userName": "eva.k",
        "password": "river-stone",
        "name": {"givenName": "Eva", "familyName": "Khan"},
    }


def test_okta_renames_a_group_with_a_pathless_replace() -> None:
    after = patched(GROUP_NOW, patch({"op": "replace", "value": {"id": "g-1", "displayName": "7B"}}), GROUP)
    assert after == {**GROUP_NOW, "displayName": "7B"}


def test_okta_adds_members_with_display_names_once_each() -> None:
    after = patched(
        GROUP_NOW,
        patch(
            {
                "op": "add",
                "path": "members",
                "value": [{"value": "u-2", "display": "ben.o"}, {"value": "u-3", "display": "cara.m"}],
            }
        ),
        GROUP,
    )
    assert after["members"] == [{"value": "u-1"}, {"value": "u-2"}, {"value": "u-3", "display": "cara.m"}]


def test_okta_removes_a_member_by_filter() -> None:
    after = patched(GROUP_NOW, patch({"op": "remove", "path": 'members[value eq "u-1"]'}), GROUP)
    assert after["members"] == [{"value": "u-2"}]


def test_okta_replaces_all_members() -> None:
    after = patched(
        GROUP_NOW, patch({"op": "replace", "path": "members", "value": [{"value": "u-9"}]}), GROUP
    )
    assert after["members"] == [{"value": "u-9"}]


# The other forms RFC 7644 allows


def test_remove_without_a_value_empties_the_members() -> None:
    assert patched(GROUP_NOW, patch({"op": "remove", "path": "members"}), GROUP)["members"] == []


def test_a_filtered_path_with_a_sub_attribute_changes_only_that_part() -> None:
    after = patched(
        GROUP_NOW,
        patch(
            {"op": "replace", "path": 'members[value eq "u-2"].display', "value": "Ben"},
            {"op": "remove", "path": 'members[value eq "u-1"].value'},
        ),
        GROUP,
    )
    assert after["members"] == [{}, {"value": "u-2", "display": "Ben"}]


def test_a_filtered_replace_swaps_the_matching_value() -> None:
    after = patched(
        GROUP_NOW,
        patch({"op": "replace", "path": 'members[value eq "u-1"]', "value": {"value": "u-7"}}),
        GROUP,
    )
    assert after["members"] == [{"value": "u-7"}, {"value": "u-2"}]


def test_removing_a_simple_or_complex_attribute_clears_it() -> None:
    after = patched(
        USER_NOW, patch({"op": "remove", "path": "externalId"}, {"op": "remove", "path": "name"}), USER
    )
    assert (after["externalId"], after["name"]) == (None, None)


def test_the_extension_is_patched_by_its_urn() -> None:
    after = patched(
        {"displayName": "7A"},
        patch(
            {
                "op": "replace",
                "path": "urn:rollcall:params:scim:schemas:extension:class:2.0:Group:kind",
                "value": "teaching",
            }
        ),
        GROUP,
    )
    assert after["urn:rollcall:params:scim:schemas:extension:class:2.0:Group"] == {"kind": "teaching"}


def test_a_request_without_schemas_is_accepted() -> None:
    after = patched(USER_NOW, {"Operations": [{"op": "replace", "path": "active", "value": False}]}, USER)
    assert after["active"] is False


# Refusals: each a 400 with its scimType, and nothing applied


@pytest.mark.parametrize(
    ("request_body", "scim_type", "detail"),
    [
        ([], "invalidSyntax", "The request body is a JSON object."),
        ({"schemas": ["urn:other"], "Operations": []}, "invalidSyntax", "schemas must include"),
        (patch(), "invalidSyntax", "non-empty list of Operations"),
        (
            {"schemas": [PATCH_OP], "Operations": {"op": "add"}},
            "invalidSyntax",
            "non-empty list of Operations",
        ),
        (patch("replace"), "invalidSyntax", "Each PATCH operation is an object."),  # type: ignore[arg-type]
        (patch({"op": "move", "path": "active"}), "invalidSyntax", "Unknown PATCH op 'move'"),
        (patch({"path": "active", "value": True}), "invalidSyntax", "Unknown PATCH op"),
        (patch({"op": "remove"}), "noTarget", "names its target in 'path'"),
        (patch({"op": "replace", "value": "x"}), "invalidValue", "value is an object of attributes"),
        (patch({"op": "replace", "path": 7, "value": "x"}), "invalidPath", "A PATCH path is a string."),
        (patch({"op": "replace", "path": "name[x eq", "value": "x"}), "invalidPath", "is not valid"),
        (patch({"op": "add", "path": "active"}), "invalidValue", "An add operation has a value."),
        (patch({"op": "replace", "path": "id", "value": "x"}), "mutability", "id is read-only."),
        (
            patch({"op": "add", "path": "groups", "value": [{"value": "g"}]}),
            "mutability",
            "groups is read-only.",
        ),
        (
            patch({"op": "replace", "path": 'active[value eq "x"]', "value": True}),
            "invalidPath",
            "single value",
        ),
        (patch({"op": "replace", "path": "name", "value": "Ava Khan"}), "invalidValue", "name is an object"),
        (
            patch({"op": "replace", "path": "userName.first", "value": "x"}),
            "invalidPath",
            "no sub-attributes",
        ),
    ],
)
def test_a_user_patch_is_refused(request_body: Any, scim_type: str, detail: str) -> None:
    status, refused_type, message = refusal(USER_NOW, request_body)
    assert (status, refused_type) == (400, scim_type) and detail in message


@pytest.mark.parametrize(
    ("operation", "scim_type", "detail"),
    [
        ({"op": "add", "path": "members.value", "value": "u-3"}, "invalidPath", 'members[value eq "..."]'),
        ({"op": "add", "path": "members", "value": ["u-3"]}, "invalidValue", "values of members are objects"),
        ({"op": "remove", "path": 'members[value eq "u-9"].display'}, None, ""),
        (
            {"op": "replace", "path": 'members[value eq "u-9"]', "value": {"value": "u-3"}},
            "noTarget",
            "matches",
        ),
        ({"op": "replace", "path": 'members[value eq "u-1"]', "value": "u-3"}, "invalidValue", "are objects"),
    ],
)
def test_a_group_patch_is_refused(operation: dict[str, Any], scim_type: str | None, detail: str) -> None:
    if scim_type is None:
        # Removing what no value matches is no error: the members stay as they are.
        assert patched(GROUP_NOW, patch(operation), GROUP) == GROUP_NOW
        return
    status, refused_type, message = refusal(GROUP_NOW, patch(operation), GROUP)
    assert (status, refused_type) == (400, scim_type) and detail in message


def test_a_refused_operation_leaves_the_document_as_it_was() -> None:
    current = {**USER_NOW, "name": dict(USER_NOW["name"])}
    refusal(
        current,
        patch(
            {"op": "replace", "path": "name.givenName", "value": "Eva"},
            {"op": "replace", "path": "id", "value": "x"},
        ),
    )
    assert current == USER_NOW


# POST and PUT bodies


def test_a_post_body_keeps_the_writable_attributes_under_their_canonical_names() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "x",
        "USERNAME": "ava.k",
        "name": {"GivenName": "Ava", "formatted": "Ava Khan"},
        "emails": [{"value": "a@example.org"}],
        "name.familyName": "Khan",
        "active": True,
    }
    assert document(body, USER) == {
        "userName": "ava.k",
        "name": {"givenName": "Ava"},
        "emails": [{"value": "a@example.org"}],
        "active": True,
    }


def test_a_post_body_may_clear_a_complex_attribute_but_not_give_it_text() -> None:
    assert document({"name": None}, USER) == {"name": None}
    with pytest.raises(ScimError) as refused:
        document({"name": "Ava Khan"}, USER)
    assert (refused.value.status, refused.value.scim_type) == (400, "invalidValue")

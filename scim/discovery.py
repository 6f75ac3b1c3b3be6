"""What `/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas` publish (RFC 7643 sections 5 to 7).

The schemas list only what Rollcall keeps: a provider's other attributes are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from scim.protocol import CLASS_EXTENSION, GROUP_SCHEMA, MAX_COUNT, USER_SCHEMA

SERVICE_PROVIDER_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


def _attribute(
    name: str,
    type: str = "string",
    *,
    required: bool = False,
    mutability: str = "readWrite",
    returned: str = "default",
    uniqueness: str = "none",
    multi_valued: bool = False,
    case_exact: bool = False,
    canonical_values: list[str] | None = None,
    reference_types: list[str] | None = None,
    sub_attributes: list[dict[str, Any]] | None = None,
    description: str = "",
) -> dict[str, Any]:
    attribute: dict[str, Any] = {
        "name": name,
        "type": type,
        "multiValued": multi_valued,
        "description": description,
        "required": required,
        "mutability": mutability,
        "returned": returned,
    }
    if type in ("string", "reference"):
        attribute |= {"caseExact": case_exact, "uniqueness": uniqueness}
    if canonical_values:
        attribute["canonicalValues"] = canonical_values
    if reference_types:
        attribute["referenceTypes"] = reference_types
    if sub_attributes:
        attribute["subAttributes"] = sub_attributes
    return attribute


USER: dict[str, Any] = {
    "id": USER_SCHEMA,
    "name": "User",
    "description": "A pupil or a teacher of the school.",
    "attributes": [
        _attribute(
            "userName",
            required=True,
            uniqueness="server",
            description="The username people sign in to Rollcall with: 1 to 64 letters, digits, dots, "
            "dashes and underscores, unique in the school whatever its case.",
        ),
        _attribute(
            "name",
            "complex",
            description="The user's name.",
            sub_attributes=[
                _attribute("givenName", description="First name."),
                _attribute("familyName", description="Surname."),
            ],
        ),
        # Required of every user, which always has one; a request that leaves it out gets a Pupil.
        _attribute(
            "userType",
            required=True,
            canonical_values=["Pupil", "Teacher"],
            description="Pupil or Teacher, whatever the case; Pupil when a request leaves it out.",
        ),
        _attribute(
            "active",
            "boolean",
            required=True,
            description="False deletes the user (softly: they can no longer sign in); true restores "
            "them. True when left out of a new user.",
        ),
        _attribute(
            "password",
            mutability="writeOnly",
            returned="never",
            description="Optional; must meet the school's password policy. Without one, the user "
            "signs in through the provider.",
        ),
        _attribute(
            "groups",
            "complex",
            multi_valued=True,
            mutability="readOnly",
            description="The user's classes; change them through the Groups.",
            sub_attributes=[
                _attribute("value", mutability="readOnly", description="The class's id."),
                _attribute(
                    "$ref",
                    "reference",
                    mutability="readOnly",
                    reference_types=["Group"],
                    description="The class's URI.",
                ),
                _attribute("display", mutability="readOnly", description="The class's name."),
            ],
        ),
    ],
}

GROUP: dict[str, Any] = {
    "id": GROUP_SCHEMA,
    "name": "Group",
    "description": "A class of the school.",
    "attributes": [
        _attribute(
            "displayName", required=True, description="The class's name, unique among classes of its kind."
        ),
        _attribute(
            "members",
            "complex",
            multi_valued=True,
            description="The users in the class.",
            sub_attributes=[
                _attribute("value", mutability="immutable", description="The user's id."),
                _attribute(
                    "$ref",
                    "reference",
                    mutability="immutable",
                    reference_types=["User"],
                    description="The user's URI.",
                ),
                _attribute(
                    "type", mutability="immutable", canonical_values=["User"], description="Always User."
                ),
            ],
        ),
    ],
}

CLASS: dict[str, Any] = {
    "id": CLASS_EXTENSION,
    "name": "Class",
    "description": "What kind of class a Group is.",
    "attributes": [
        _attribute(
            "kind",
            required=True,
            canonical_values=["registration", "teaching"],
            description="registration (a user is in at most one: joining another moves them) or "
            "teaching (any number). Teaching when the extension is left out.",
        ),
    ],
}

SCHEMAS = {schema["id"]: schema for schema in (USER, GROUP, CLASS)}

RESOURCE_TYPES: dict[str, dict[str, Any]] = {
    "User": {
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "Pupils and teachers.",
        "schema": USER_SCHEMA,
    },
    "Group": {
        "id": "Group",
        "name": "Group",
        "endpoint": "/Groups",
        "description": "Classes.",
        "schema": GROUP_SCHEMA,
        "schemaExtensions": [{"schema": CLASS_EXTENSION, "required": True}],
    },
}


def service_provider_config(base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_COUNT},
        "changePassword": {"supported": True},
        "sort": {"supported": True},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "Provisioning token",
                "primary": True,
                "description": "A token with the PROVISION scope, issued by a school admin (createApiToken) or "
                "by `rollcall school provisioning-token`; sent as `Authorization: Bearer ...`.",
            }
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"},
    }


def resource_type(name: str, base_url: str) -> dict[str, Any]:
    return {
        "schemas": [RESOURCE_TYPE],
        **RESOURCE_TYPES[name],
        "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{name}"},
    }


def schema(urn: str, base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SCHEMA],
        **SCHEMAS[urn],
        "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{urn}"},
    }

"""SCIM 2.0 (RFC 7643, RFC 7644) at /scim/v2: a managed school's provider keeps its users and classes up to date."""

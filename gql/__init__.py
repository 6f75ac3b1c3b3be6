"""Rollcall's GraphQL API: types, queries, mutations and permissions over the domain in `db/`."""

"""Rollcall's domain: models, migrations and the operations a school performs on its roster."""

"""Row-level security, checked against the real catalog and the application role."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import Database
from db.models import TENANT_TABLES
from db.scope import school_scope, unbound_scope
from tests.conftest import SchoolFixture, make_school, make_user

TENANT_TABLES_IN_CATALOG = """
select c.relname from pg_class c join pg_attribute a on a.attrelid = c.oid
where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and a.attname = 'school_id'
order by 1
"""


async def fill_every_table(db: Database, school: SchoolFixture) -> None:
    """Give the school a row in every tenant table (users, sessions and audit events exist already)."""
    pupil = await make_user(db, school)
    async with school_scope(db, school.id) as session:
        class_id = uuid.uuid4()
        await session.execute(
            text(
                "insert into classes (school_id, id, name, name_key, kind) "
                "values (:s, :c, 'Year 1', 'year 1', 'REGISTRATION')"
            ),
            {"s": school.id, "c": class_id},
        )
        await session.execute(
            text(
                "insert into class_memberships (school_id, class_id, user_id, kind) values (:s, :c, :u, 'REGISTRATION')"
            ),
            {"s": school.id, "c": class_id, "u": pupil},
        )
        client = (
            await session.execute(
                text(
                    "insert into api_tokens (school_id, name, token_hash, scopes) "
                    "values (:s, 'app', :h, '{ROSTER_READ}') returning id"
                ),
                {"s": school.id, "h": uuid.uuid4().bytes},
            )
        ).scalar_one()
        await session.execute(
            text(
                "insert into oauth_access_tokens (school_id, client_id, token_hash, scopes, expires_at) "
                "values (:s, :c, :h, '{}', now() + interval '1 hour')"
            ),
            {"s": school.id, "c": client, "h": uuid.uuid4().bytes},
        )
        await session.execute(
            text("insert into import_jobs (school_id, file_name) values (:s, 'roster.csv')"), {"s": school.id}
        )
        job_id = uuid.uuid4()
        await session.execute(
            text("insert into rollover_jobs (school_id, id) values (:s, :j)"), {"s": school.id, "j": job_id}
        )
        await session.execute(
            text(
                "insert into rollover_pupils (school_id, job_id, user_id, outcome) values (:s, :j, :u, 'UNCHANGED')"
            ),
            {"s": school.id, "j": job_id, "u": pupil},
        )
        await session.execute(
            text(
                "insert into rollover_memberships (school_id, job_id, change, class_id, user_id, kind, created_at) "
                "values (:s, :j, 'ADDED', :c, :u, 'REGISTRATION', now())"
            ),
            {"s": school.id, "j": job_id, "c": class_id, "u": pupil},
        )


@pytest.fixture
async def two_schools(owner_engine: AsyncEngine, db: Database) -> tuple[SchoolFixture, SchoolFixture]:
    a, b = await make_school(owner_engine, db), await make_school(owner_engine, db)
    await fill_every_table(db, a)
    await fill_every_table(db, b)
    return a, b


async def test_every_table_with_school_id_is_a_known_tenant_table(db: Database) -> None:
    async with unbound_scope(db) as session:
        tables = (await session.execute(text(TENANT_TABLES_IN_CATALOG))).scalars().all()
    assert sorted(tables) == sorted(TENANT_TABLES)


async def test_application_role_is_neither_superuser_nor_owner_nor_bypassing_rls(db: Database) -> None:
    async with unbound_scope(db) as session:
        role = (
            await session.execute(
                text("select rolname, rolsuper, rolbypassrls from pg_roles where rolname = current_user")
            )
        ).one()
        owned = (
            (
                await session.execute(
                    text(
                        "select relname from pg_class where relnamespace = 'public'::regnamespace "
                        "and relowner = (select oid from pg_roles where rolname = current_user)"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert role.rolname == "rollcall_app"
    assert not role.rolsuper and not role.rolbypassrls
    assert owned == []


async def test_every_tenant_table_has_rls_enabled_and_forced(db: Database) -> None:
    async with unbound_scope(db) as session:
        rows = (
            await session.execute(
                text(
                    "select relname, relrowsecurity, relforcerowsecurity from pg_class "
                    "where relnamespace = 'public'::regnamespace and relname = any(:tables)"
                ),
                {"tables": [*TENANT_TABLES, "schools"]},
            )
        ).all()
    assert len(rows) == len(TENANT_TABLES) + 1
    for name, enabled, forced in rows:
        assert enabled and forced, name


async def test_every_key_of_every_tenant_table_includes_school_id(db: Database) -> None:
    async with unbound_scope(db) as session:
        keys = (
            await session.execute(
                text("""
            select c.relname as table_name, k.conname, k.contype::text as contype,
                   array(select a.attname from pg_attribute a
                         where a.attrelid = k.conrelid and a.attnum = any(k.conkey)) as columns,
                   array(select a.attname from pg_attribute a
                         where a.attrelid = k.confrelid and a.attnum = any(k.confkey)) as referenced
            from pg_constraint k join pg_class c on c.oid = k.conrelid
            where c.relname = any(:tables) and k.contype in ('p', 'u', 'f')
        """),
                {"tables": list(TENANT_TABLES)},
            )
        ).all()
        unique_indexes = (
            await session.execute(
                text("""
            select i.indexrelid::regclass::text as name,
                   array(select a.attname from pg_attribute a
                         where a.attrelid = i.indrelid and a.attnum = any(i.indkey)) as columns
            from pg_index i join pg_class c on c.oid = i.indrelid
            where c.relname = any(:tables) and i.indisunique
        """),
                {"tables": list(TENANT_TABLES)},
            )
        ).all()
    assert {k.contype for k in keys} == {"p", "u", "f"}
    for key in keys:
        assert "school_id" in key.columns, key.conname
        if key.contype == "f" and key.referenced != ["id"]:
            assert "school_id" in key.referenced, key.conname
    for index in unique_indexes:
        assert "school_id" in index.columns, index.name


async def test_a_bound_school_sees_none_of_another_schools_rows(
    db: Database, two_schools: tuple[SchoolFixture, SchoolFixture]
) -> None:
    a, _ = two_schools
    async with school_scope(db, a.id) as session:
        for table in TENANT_TABLES:
            schools = set((await session.execute(text(f"select school_id from {table}"))).scalars())
            assert schools == {a.id}, table
        visible = (await session.execute(text("select id from schools"))).scalars().all()
        assert visible == [a.id]


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_writing_into_another_school_fails(
    db: Database, two_schools: tuple[SchoolFixture, SchoolFixture], table: str
) -> None:
    a, b = two_schools
    with pytest.raises(DBAPIError, match="row-level security|permission denied"):
        async with school_scope(db, a.id) as session:
            await session.execute(text(f"update {table} set school_id = :b"), {"b": b.id})
    async with school_scope(db, a.id) as session:
        # Every column a row is written with: those PostgreSQL generates (users.username_key) take no value.
        columns = (
            await session.execute(
                text(
                    "select string_agg(quote_ident(attname), ', ' order by attnum) from pg_attribute "
                    "where attrelid = cast(:table as regclass) and attnum > 0 and not attisdropped "
                    "and attgenerated = ''"
                ),
                {"table": table},
            )
        ).scalar_one()
    with pytest.raises(DBAPIError, match="row-level security|permission denied"):
        async with school_scope(db, a.id) as session:
            # Copy one of A's rows, re-labelled as B's.
            await session.execute(
                text(
                    f"insert into {table} ({columns}) select {columns} from jsonb_populate_record("
                    f"null::{table}, (select to_jsonb(r) || jsonb_build_object('school_id', cast(:b as uuid), "
                    f"'id', gen_random_uuid()) from {table} r limit 1))"
                ),
                {"b": b.id},
            )
    async with school_scope(db, b.id) as session:
        assert set((await session.execute(text(f"select school_id from {table}"))).scalars()) == {b.id}


async def test_updates_to_another_schools_rows_touch_nothing(
    db: Database, two_schools: tuple[SchoolFixture, SchoolFixture]
) -> None:
    a, b = two_schools
    async with school_scope(db, a.id) as session:
        result = await session.execute(
            text("update users set surname = 'x' where school_id = :b"), {"b": b.id}
        )
        assert result.rowcount == 0  # type: ignore[attr-defined]
    async with school_scope(db, b.id) as session:
        assert (
            await session.execute(text("select count(*) from users where surname = 'x'"))
        ).scalar_one() == 0


async def test_with_no_school_bound_every_tenant_table_reads_empty(
    db: Database, two_schools: tuple[SchoolFixture, SchoolFixture]
) -> None:
    async with unbound_scope(db) as session:
        for table in (*TENANT_TABLES, "schools"):
            assert (await session.execute(text(f"select count(*) from {table}"))).scalar_one() == 0, table


async def test_a_pooled_connection_carries_no_school_into_the_next_transaction(
    migrated: object, two_schools: tuple[SchoolFixture, SchoolFixture]
) -> None:
    a, b = two_schools
    single = Database(migrated.urls().app, pool_size=1)  # type: ignore[attr-defined]
    backend = text("select pg_backend_pid()")
    try:
        async with school_scope(single, a.id) as session:
            assert (await session.execute(text("select count(*) from users"))).scalar_one() > 0
            first = (await session.execute(backend)).scalar_one()
        async with school_scope(single, b.id) as session:
            seen = set((await session.execute(text("select school_id from users"))).scalars())
            assert (await session.execute(backend)).scalar_one() == first  # the very same connection
        assert seen == {b.id}
        async with unbound_scope(single) as session:
            assert (await session.execute(text("select count(*) from users"))).scalar_one() == 0
            assert (await session.execute(backend)).scalar_one() == first
    finally:
        await single.dispose()


async def test_a_second_registration_class_is_refused_by_the_database(
    db: Database, school: SchoolFixture
) -> None:
    pupil = await make_user(db, school)
    first, second = uuid.uuid4(), uuid.uuid4()
    insert_class = text(
        "insert into classes (school_id, id, name, name_key, kind) "
        "values (:s, :c, :n, lower(cast(:n as varchar)), 'REGISTRATION')"
    )
    join = text(
        "insert into class_memberships (school_id, class_id, user_id, kind) "
        "values (:s, :c, :u, 'REGISTRATION')"
    )
    async with school_scope(db, school.id) as session:
        await session.execute(insert_class, {"s": school.id, "c": first, "n": "P1"})
        await session.execute(insert_class, {"s": school.id, "c": second, "n": "P2"})
        await session.execute(join, {"s": school.id, "c": first, "u": pupil})
    with pytest.raises(IntegrityError, match="uq_class_memberships_one_registration_class"):
        async with school_scope(db, school.id) as session:
            await session.execute(join, {"s": school.id, "c": second, "u": pupil})


async def test_a_membership_cannot_claim_the_wrong_kind_of_class(db: Database, school: SchoolFixture) -> None:
    pupil = await make_user(db, school)
    teaching = uuid.uuid4()
    async with school_scope(db, school.id) as session:
        await session.execute(
            text(
                "insert into classes (school_id, id, name, name_key, kind) "
                "values (:s, :c, 'Art', 'art', 'TEACHING')"
            ),
            {"s": school.id, "c": teaching},
        )
    with pytest.raises(IntegrityError, match="fk_class_memberships_class"):
        async with school_scope(db, school.id) as session:
            await session.execute(
                text(
                    "insert into class_memberships (school_id, class_id, user_id, kind) "
                    "values (:s, :c, :u, 'REGISTRATION')"
                ),
                {"s": school.id, "c": teaching, "u": pupil},
            )


async def test_audit_events_cannot_be_changed_or_removed(db: Database, school: SchoolFixture) -> None:
    with pytest.raises(DBAPIError, match="permission denied"):
        async with school_scope(db, school.id) as session:
            await session.execute(text("update audit_events set action = 'x'"))
    with pytest.raises(DBAPIError, match="permission denied"):
        async with school_scope(db, school.id) as session:
            await session.execute(text("delete from audit_events"))

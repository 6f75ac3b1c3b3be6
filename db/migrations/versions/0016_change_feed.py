"""The change feed: every change to a user, a class or a membership, recorded in the same transaction.

- `changes`: one row per changed entity and statement, written by triggers on `users`, `classes` and
  `class_memberships` (so every writer records, whatever it is: GraphQL, an import, SCIM, maintenance, a
  migration). Ids only: the school, the entity's kind and id (a membership's user, class and kind), UPSERT or
  DELETE, when, and the actor's label, which is `app.actor`, set for the transaction by whoever binds the
  school (`db.scope.bind_school`), never a name.
- `xid` is the writing transaction's id. Readers see only the rows of transactions older than the oldest
  one still running (`pg_snapshot_xmin(pg_current_snapshot())`), in the order (xid, position): a prefix of
  that order that only grows, so a reader that has passed a point never finds a row appear behind it.
- Deleting a school takes its feed with it: rows deleted along with their school are not recorded.
- The trigger functions run as their owner (SECURITY DEFINER): the application role may read the feed,
  never write or change it. Row-level security is forced on `changes` too, so a migration that lifts it on
  `users` or `classes` to change every school at once must lift it on `changes` as well.
- `schools.feed_retention_days` (30): `rollcall purge` removes older records; `feed_purged_xid` and
  `feed_purged_position` remember the last record it removed, so a cursor from before it is refused.

Revision ID: 0016
Revises: 0012
Create Date: 2026-12-06
"""

from alembic import op

from db.migrations.rls import execute_script, protect_tenant_table

revision = "0016"
down_revision = "0012"
branch_labels = None
depends_on = None

SEARCH_PATH = "SET search_path = pg_catalog, public, pg_temp"

# Columns a change to which is not a change the feed reports: secrets, and who deleted a user (which the purge
# clears when that person goes).
USER_UNREPORTED = "'{password_hash,login_code_version,deleted_by}'::text[]"

USER_CHANGES = f"""
CREATE FUNCTION rollcall_record_user_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER {SEARCH_PATH} AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'USER', n.id, CASE WHEN n.deleted_at IS NULL THEN 'UPSERT' ELSE 'DELETE' END
        FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'USER', n.id, CASE WHEN n.deleted_at IS NULL THEN 'UPSERT' ELSE 'DELETE' END
        FROM new_rows n LEFT JOIN old_rows o ON o.school_id = n.school_id AND o.id = n.id
        WHERE o.id IS NULL
           OR to_jsonb(n) - {USER_UNREPORTED} IS DISTINCT FROM to_jsonb(o) - {USER_UNREPORTED};
    ELSE
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT o.school_id, 'USER', o.id, 'DELETE' FROM old_rows o
        WHERE EXISTS (SELECT FROM schools s WHERE s.id = o.school_id);
    END IF;
    RETURN NULL;
END
$$
"""

CLASS_CHANGES = f"""
CREATE FUNCTION rollcall_record_class_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER {SEARCH_PATH} AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'CLASS', n.id, 'UPSERT' FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT n.school_id, 'CLASS', n.id, 'UPSERT'
        FROM new_rows n LEFT JOIN old_rows o ON o.school_id = n.school_id AND o.id = n.id
        WHERE o.id IS NULL OR to_jsonb(n) IS DISTINCT FROM to_jsonb(o);
    ELSE
        INSERT INTO changes (school_id, kind, entity_id, operation)
        SELECT o.school_id, 'CLASS', o.id, 'DELETE' FROM old_rows o
        WHERE EXISTS (SELECT FROM schools s WHERE s.id = o.school_id);
    END IF;
    RETURN NULL;
END
$$
"""

# A membership is (user, class); its kind is what it is now. An UPDATE (a class changing kind cascades here)
# is a DELETE of each pair that is gone and an UPSERT of each pair that is new or changed.
MEMBERSHIP_CHANGES = f"""
CREATE FUNCTION rollcall_record_membership_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER {SEARCH_PATH} AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO changes (school_id, kind, entity_id, class_id, membership_kind, operation)
        SELECT n.school_id, 'MEMBERSHIP', n.user_id, n.class_id, n.kind, 'UPSERT' FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO changes (school_id, kind, entity_id, class_id, membership_kind, operation)
        SELECT o.school_id, 'MEMBERSHIP', o.user_id, o.class_id, o.kind, 'DELETE' FROM old_rows o
        WHERE NOT EXISTS (
            SELECT FROM new_rows n
            WHERE n.school_id = o.school_id AND n.user_id = o.user_id AND n.class_id = o.class_id);
        INSERT INTO changes (school_id, kind, entity_id, class_id, membership_kind, operation)
        SELECT n.school_id, 'MEMBERSHIP', n.user_id, n.class_id, n.kind, 'UPSERT' FROM new_rows n
        WHERE NOT EXISTS (
            SELECT FROM old_rows o
            WHERE o.school_id = n.school_id AND o.user_id = n.user_id AND o.class_id = n.class_id
              AND o.kind = n.kind);
    ELSE
        INSERT INTO changes (school_id, kind, entity_id, class_id, membership_kind, operation)
        SELECT o.school_id, 'MEMBERSHIP', o.user_id, o.class_id, o.kind, 'DELETE' FROM old_rows o
        WHERE EXISTS (SELECT FROM schools s WHERE s.id = o.school_id);
    END IF;
    RETURN NULL;
END
$$
"""

WATCHED = {
    "users": "rollcall_record_user_changes",
    "classes": "rollcall_record_class_changes",
    "class_memberships": "rollcall_record_membership_changes",
}


def _triggers(table: str, function: str) -> str:
    # Statement-level, with transition tables: an import's bulk INSERT is one INSERT into the feed.
    return f"""
    CREATE TRIGGER {table}_recorded_inserts AFTER INSERT ON {table}
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}();
    CREATE TRIGGER {table}_recorded_updates AFTER UPDATE ON {table}
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}();
    CREATE TRIGGER {table}_recorded_deletes AFTER DELETE ON {table}
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()
    """


def upgrade() -> None:
    execute_script("""
    ALTER TABLE schools
        ADD COLUMN feed_retention_days integer NOT NULL DEFAULT 30,
        ADD COLUMN feed_purged_xid bigint,
        ADD COLUMN feed_purged_position bigint,
        ADD CONSTRAINT ck_schools_feed_retention_days CHECK (feed_retention_days BETWEEN 1 AND 3650);

    CREATE TABLE changes (
        school_id uuid NOT NULL,
        xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        position bigint GENERATED BY DEFAULT AS IDENTITY,
        kind varchar(16) NOT NULL,
        entity_id uuid NOT NULL,
        class_id uuid,
        membership_kind varchar(16),
        operation varchar(8) NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        actor varchar(200) NOT NULL DEFAULT (coalesce(current_setting('app.actor', true), '')),
        CONSTRAINT pk_changes PRIMARY KEY (school_id, xid, position),
        CONSTRAINT fk_changes_school_id_schools FOREIGN KEY (school_id) REFERENCES schools (id) ON DELETE CASCADE,
        CONSTRAINT ck_changes_kind CHECK (kind IN ('USER', 'CLASS', 'MEMBERSHIP')),
        CONSTRAINT ck_changes_operation CHECK (operation IN ('UPSERT', 'DELETE')),
        CONSTRAINT ck_changes_membership_kind CHECK (membership_kind IN ('REGISTRATION', 'TEACHING')),
        CONSTRAINT ck_changes_memberships_name_their_class CHECK ((kind = 'MEMBERSHIP') = (class_id IS NOT NULL))
    )
    """)
    protect_tenant_table("changes", grants="SELECT")
    for function in (USER_CHANGES, CLASS_CHANGES, MEMBERSHIP_CHANGES):
        op.execute(function)
    for table, function in WATCHED.items():
        op.execute(f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC")
        execute_script(_triggers(table, function))


def downgrade() -> None:
    for table, function in WATCHED.items():
        for event in ("inserts", "updates", "deletes"):
            op.execute(f"DROP TRIGGER {table}_recorded_{event} ON {table}")
        op.execute(f"DROP FUNCTION {function}()")
    execute_script("""
    DROP TABLE changes;
    ALTER TABLE schools
        DROP COLUMN feed_retention_days,
        DROP COLUMN feed_purged_xid,
        DROP COLUMN feed_purged_position
    """)

"""Data kept that should not be: typed import passwords only sealed, and class names unique by their key.

An import preview kept the passwords typed into its file as plain JSON. They are now sealed with a key the
database never holds, so the plain ones go; a preview that had some can no longer be applied as it was
shown, so it is failed and the school uploads the file again.

Class names were unique by lower(name); now by a key (db.names.class_name_key) that also folds case the
Unicode way and maps Cyrillic and Greek look-alikes onto Latin letters. Classes that already share a key
keep their names: the later ones get a key of their own (the name key and their id) until they are renamed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from alembic import op
from sqlalchemy import text

from db.migrations.rls import execute_script
from db.names import class_name_key

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPLOAD_AGAIN = "Rollcall now keeps the passwords typed into a file encrypted; upload the file again."


def upgrade() -> None:
    connection = op.get_bind()
    op.execute("ALTER TABLE classes ADD COLUMN name_key text")
    # Row-level security holds for the owner too: each school is bound in turn, as maintenance does.
    for (school_id,) in connection.execute(text("SELECT id FROM schools")).all():
        connection.execute(
            text("SELECT set_config('app.school_id', :school, true)"), {"school": str(school_id)}
        )
        connection.execute(
            text(
                "UPDATE import_jobs SET status = 'FAILED', failure_reason = :reason, passwords = NULL, "
                "updated_at = now() WHERE passwords IS NOT NULL"
            ),
            {"reason": UPLOAD_AGAIN},
        )
        taken: set[tuple[str, str]] = set()
        for class_id, kind, name in connection.execute(
            text("SELECT id, kind, name FROM classes ORDER BY created_at, id")
        ).all():
            key = class_name_key(name)
            if (kind, key) in taken:
                key = f"{key} ({class_id})"
            taken.add((kind, key))
            connection.execute(
                text("UPDATE classes SET name_key = :key WHERE id = :id"), {"key": key, "id": class_id}
            )
    connection.execute(text("SELECT set_config('app.school_id', '', true)"))
    execute_script("""
    ALTER TABLE classes ALTER COLUMN name_key SET NOT NULL;
    DROP INDEX uq_classes_school_id_kind_name;
    CREATE UNIQUE INDEX uq_classes_school_id_kind_name_key ON classes (school_id, kind, name_key);
    ALTER TABLE import_jobs DROP CONSTRAINT ck_import_jobs_passwords_only_in_preview;
    ALTER TABLE import_jobs DROP COLUMN passwords;
    ALTER TABLE import_jobs ADD COLUMN sealed_passwords bytea;
    ALTER TABLE import_jobs ADD CONSTRAINT ck_import_jobs_sealed_passwords_only_in_preview
        CHECK (sealed_passwords IS NULL OR status = 'PREVIEW')
    """)

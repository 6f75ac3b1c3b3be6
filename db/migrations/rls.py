"""Row-level security helpers shared by migrations."""

from alembic import context, op

CURRENT_SCHOOL = "(select nullif(current_setting('app.school_id', true), ''))::uuid"


def app_role() -> str:
    role: str = context.config.attributes["app_role"]
    return '"' + role.replace('"', '""') + '"'


def protect_tenant_table(table: str, *, grants: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    """Enable and force RLS, allow only the bound school's rows (fail closed), then grant."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {table}_of_bound_school ON {table} "
        f"USING (school_id = {CURRENT_SCHOOL}) WITH CHECK (school_id = {CURRENT_SCHOOL})"
    )
    op.execute(f"GRANT {grants} ON {table} TO {app_role()}")


def execute_script(script: str) -> None:
    """Run a script of DDL statements one by one (asyncpg prepares each statement on its own)."""
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)

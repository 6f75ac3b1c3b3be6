"""PgBouncer in transaction mode in front of the embedded PostgreSQL, as an operator runs it (Debian's package);
the tests and the benchmarks start it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from db.embedded import APP_ROLE, OWNER_ROLE, EmbeddedServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    assert found, "pgbouncer is not installed: `apt-get install -y pgbouncer` (.ci/run installs it)"
    return found


@dataclass(frozen=True)
class PgBouncer:
    port: int
    embedded: EmbeddedServer
    log: Path
    pid: int

    def app_url(self, database: str = "rollcall") -> str:
        """The application role's URL through the pooler."""
        return f"postgresql+asyncpg://{APP_ROLE}@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict[str, str]]:
        """A SHOW command on PgBouncer's admin console (simple protocol only, so through psql)."""
        output = subprocess.run(
            [str(self.embedded.server.bin_path / "psql"), "-X", "-A", "-F", "\t", "-P", "footer=off"]
            + ["-h", "127.0.0.1", "-p", str(self.port), "-U", OWNER_ROLE, "-d", "pgbouncer", "-c", command],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.splitlines()
        header = output[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=True)) for line in output[1:]]


def _server_port(socket_dir: str) -> int:
    sockets = sorted(Path(socket_dir).glob(".s.PGSQL.*[0-9]"))
    assert sockets, f"no PostgreSQL socket in {socket_dir}"
    return int(sockets[0].name.rsplit(".", 1)[1])


@contextmanager
def pgbouncer(embedded: EmbeddedServer, *, pool_size: int) -> Iterator[PgBouncer]:
    """PgBouncer with `pool_mode = transaction` and at most `pool_size` connections to PostgreSQL, on a free
    port, forwarding every database name to the embedded server's socket; stopped at the end."""
    binary = pgbouncer_binary()
    workdir = Path(tempfile.mkdtemp(prefix="rollcall-pgbouncer-"))
    port = free_port()
    # The embedded server trusts local connections; PgBouncer trusts its clients and still needs the roles
    # listed in its auth file.
    (workdir / "userlist.txt").write_text(f'"{APP_ROLE}" ""\n"{OWNER_ROLE}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={embedded.socket_dir} port={_server_port(embedded.socket_dir)}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
admin_users = {OWNER_ROLE}
pool_mode = transaction
default_pool_size = {pool_size}
max_db_connections = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
; a request that waits for a server connection this long fails, rather than a test hanging
query_wait_timeout = 15
"""
    )
    workdir.chmod(0o755)
    for name in ("userlist.txt", "pgbouncer.ini"):
        (workdir / name).chmod(0o644)
    command = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; it runs as the user the embedded server runs as, who can reach
        # that server's socket.
        command[1:1] = ["-u", pwd.getpwuid(os.stat(embedded.socket_dir).st_uid).pw_name]
    log = workdir / "pgbouncer.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "pgbouncer did not start:\n" + log.read_text()
                time.sleep(0.05)
        yield PgBouncer(port=port, embedded=embedded, log=log, pid=process.pid)
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)

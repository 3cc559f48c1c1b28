"""Files as an attacker on the same machine would plant them, and secrets where they must
not be: state files private and never followed through a link, secret files that others
can read named, passwords in DSN query strings refused."""

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from exporter.cli import main
from exporter.config import ConfigError, parse_config
from exporter.settings import Settings
from exporter.state import FileStore, State
from exporter.stores import open_store
from tests.conftest import write


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_state_files_are_private(tmp_path: Path) -> None:
    """Records are 0600 in a 0700 directory, created so or tightened if it is ours; a
    temporary file left by a crash mid-write is removed."""
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    (directory / ".abc.tmp").write_bytes(b"half a record")
    directory.chmod(0o755)
    state = State(FileStore(directory))
    await state.save("acme/platform/poll", {"n": 1})
    assert mode(directory) == 0o700
    (record,) = directory.glob("*.json")
    assert mode(record) == 0o600
    assert not list(directory.glob("*.tmp")) and not list(directory.glob(".*.tmp"))
    assert await state.load("acme/platform/poll") == {"n": 1}


async def test_a_symlink_where_a_record_belongs_is_refused_and_counted(tmp_path: Path) -> None:
    """A link planted in place of a record is neither written through nor read through:
    the write and the read fail for that job, counted, and the victim is untouched."""
    directory, victim = tmp_path / "state", tmp_path / "victim.txt"
    victim.write_text("precious\n")
    state = State(FileStore(directory))
    await state.save("globex/platform/poll", {"n": 1})  # the directory exists now
    link = directory / "acme%2Fplatform%2Fpoll.json"
    link.symlink_to(victim)
    await state.save("acme/platform/poll", {"n": 2})
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert await state.load("acme/platform/poll") is None
    assert state.errors[("acme/platform/poll", "write")] == 1
    assert state.errors[("acme/platform/poll", "read")] == 1
    rendered = state.render("acme", "platform")
    assert b'operation="write"} 1' in rendered["cockpit_exporter_state_errors_total"]
    assert await state.load("globex/platform/poll") == {"n": 1}  # other jobs unaffected


def test_state_dir_has_no_working_directory_default(tmp_path: Path) -> None:
    """Without --state.dir no state is kept (and the start log says so); a relative one is
    refused, since it would depend on where the process was started."""
    assert Settings().state_dir is None
    with pytest.raises(ValueError, match="give an absolute path"):
        Settings(state_dir=Path("data/state"))
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config", "c.yaml", "--state.dir", "data/state"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "give an absolute path" in result.stderr


def secret_config(secret: Path) -> str:
    return (
        f"tenants:\n  - {{id: acme, mysql: {{dsn: 'mysql://u@db/x', password_file: {secret}}},"
        f" platform: {{base_url: 'http://platform', token_url: 'http://platform/t', client_id: c,"
        f" client_secret_file: {secret}}}}}\n"
        "queries:\n  - {name: q, sql: SELECT 1 AS n, metrics: [{name: m, type: gauge,"
        " help: M., value: n}]}\n"
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are private)."""
    directory = Path(tempfile.mkdtemp(prefix="cockpit-shared-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


@pytest.mark.parametrize(
    ("file_mode", "dir_mode", "warned"),
    [(0o644, 0o755, True), (0o604, 0o711, True), (0o600, 0o755, False), (0o644, 0o700, False)],
)
def test_secret_files_others_can_read_are_named(
    shared_dir: Path,
    file_mode: int,
    dir_mode: int,
    warned: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A secret file every user can read is loaded with a warning naming the setting, the
    file and its mode; a private one, or one in a private directory, without."""
    directory = shared_dir / "secrets"
    directory.mkdir()
    directory.chmod(dir_mode)
    tmp_path = shared_dir
    secret = write(directory / "db.secret", "s3cret-value\n")
    secret.chmod(file_mode)
    config = parse_config(secret_config(secret), "test")
    found = [w for w in config.warnings if "readable by" in w]
    if warned:
        assert found == [
            f"tenants[0].{setting}: {secret} is readable by every user"
            f" (mode {file_mode:04o}); chmod 600 it"
            for setting in ("mysql.password_file", "platform.client_secret_file")
        ]
    else:
        assert found == []
    assert main(["check-config", str(write(tmp_path / "c.yaml", secret_config(secret)))]) == 0
    result = capsys.readouterr()
    assert (f"{secret} is readable by every user" in result.err) is warned
    assert "s3cret-value" not in result.out + result.err


@pytest.mark.parametrize(
    "where",
    ["tenant", "discovery", "state"],
)
def test_a_password_in_a_dsn_query_string_is_refused(where: str) -> None:
    """`?password=` (or `passwd`) would be shown wherever the DSN is: refused for tenant
    databases, the discovery registry and the state store, without echoing it."""
    dsn = "mysql://cockpit@db:3306/acme?charset=utf8mb4&PassWord=hunter2-in-query"
    if where == "state":
        with pytest.raises(ValueError) as error:
            open_store(None, dsn, None)
        message = str(error.value)
    else:
        database = f"{{dsn: '{dsn}'}}"
        if where == "tenant":
            text = f"tenants:\n  - {{id: acme, mysql: {database}}}\n"
        else:
            text = f"tenant_discovery: {{dsn: '{dsn}', sql: 'SELECT 1', mysql: {database}}}\n"
        with pytest.raises(ConfigError) as error:
            parse_config(text, "test")
        message = str(error.value)
    assert "a password in the DSN's query string is refused" in message
    assert "hunter2" not in message


def test_a_secret_read_outside_the_config_is_warned_about_in_the_log(tmp_path: Path) -> None:
    """Secrets read outside a config check (the state store's password, a TLS key) warn in
    the log, once per file and mode, naming setting, file and mode but not the content."""
    secret = write(tmp_path / "state.secret", "pw-in-file\n")
    secret.chmod(0o640)
    os.chown(secret, -1, 12345)  # a group this process is not in
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            open_store(None, "mysql://cockpit@db:3306/state", secret)
    assert [(e["event"], e["file"], e["mode"], e["setting"]) for e in logs] == [
        ("secret file readable by others", str(secret), "0640", "--state.mysql.password_file")
    ]
    assert "pw-in-file" not in repr(logs)


async def test_concurrent_first_saves_all_land(tmp_path: Path) -> None:
    """Fifty jobs saving at once into a new directory: the first prepares it (and clears old
    temporary files) while the others wait, so every record is written."""
    state = State(FileStore(tmp_path / "state"))
    await asyncio.gather(*(state.save(f"t{i}/platform/poll", {"n": i}) for i in range(50)))
    assert not state.errors
    assert len(list((tmp_path / "state").glob("*.json"))) == 50

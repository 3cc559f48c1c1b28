"""The compose stack's secrets, made on first use: nothing the stack uses as is is committed.

`make compose-secrets` (which `docker compose up` needs: docker-compose.yml names these
files) and `make stack` write them into deploy/secrets/, which git ignores. A file that
exists is kept, so a stack keeps its passwords from one start to the next.

The directory is 0700 and the files 0644: the containers' users (mariadb, grafana, the
exporter's 10001) read them through bind mounts, while on the host nobody else can reach them.
"""

import secrets
import sys
from collections.abc import Callable
from pathlib import Path

import bcrypt

DIRECTORY = Path("deploy/secrets")
EXPORTER_USER = "prometheus"  # the user Prometheus scrapes the exporter as
GRAFANA_ADMIN = "admin"
TENANTS = ("t0001", "t0002")  # the compose simulator's tenants


def _token() -> str:
    return secrets.token_urlsafe(24)


def _web_config(directory: Path) -> str:
    password = (directory / "exporter_password").read_text(encoding="utf-8").strip()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"# Made by `make compose-secrets`.\nbasic_auth_users:\n  {EXPORTER_USER}: '{hashed}'\n"


def _grafana_admin(directory: Path) -> str:
    password = (directory / "grafana_admin_password").read_text(encoding="utf-8").strip()
    return f"{GRAFANA_ADMIN}:{password}"


# In order: a file made from another comes after it.
MAKERS: dict[str, Callable[[Path], str]] = {
    "db_password": lambda _: _token(),
    **{f"platform_{tenant}": lambda _: secrets.token_hex(16) for tenant in TENANTS},
    "grafana_admin_password": lambda _: _token(),
    "grafana_admin": _grafana_admin,
    "exporter_password": lambda _: _token(),
    "exporter_web": _web_config,
}


def generate(directory: Path) -> list[Path]:
    """Write every missing secret file into `directory`; returns the files written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    written = []
    for name, make in MAKERS.items():
        path = directory / name
        if path.exists():
            continue
        path.write_text(make(directory).rstrip("\n") + "\n", encoding="utf-8")
        path.chmod(0o644)
        written.append(path)
    return written


def main() -> int:
    """`python -m exporter.stack.secrets [DIR]` (what `make compose-secrets` runs)."""
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else DIRECTORY
    written = generate(directory)
    kept = len(MAKERS) - len(written)
    sys.stdout.write(f"{directory}: {len(written)} secret file(s) made, {kept} kept\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

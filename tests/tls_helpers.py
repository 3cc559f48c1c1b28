"""Certificates made with the openssl command for TLS tests."""

import subprocess
from pathlib import Path


def openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    """A self-signed CA `name`.crt / `name`.key."""
    openssl(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}")  # fmt: skip


def make_cert(directory: Path, name: str, ca: str, extension: str) -> None:
    """A certificate `name`.crt / `name`.key signed by `ca`, with one X.509 extension."""
    (directory / f"{name}.ext").write_text(extension + "\n")
    openssl(
        directory,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        f"/CN={name}",
    )
    openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey",
            f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip

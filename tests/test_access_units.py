"""In-process tests of credentials, limits, scopes and log redaction: exact answers, no HTTP."""

import base64
import logging
from pathlib import Path

import bcrypt
import pytest
import structlog

from exporter.auth import Authenticator, BasicCredential, Principal, decode_basic
from exporter.config import ConfigError
from exporter.limits import FailureLimiter, TokenBucket, client_key
from exporter.logs import REDACTED, redact
from exporter.webconfig import WebConfig, load_web_config, unknown_scopes
from tests.helpers import sha

LONG_PASSWORD = "p" * 72 + "-this tail is past bcrypt's 72 bytes"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def load(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web.yaml"
    path.write_text(text, encoding="utf-8")
    return load_web_config(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return caught.value.problems


def basic_header(user: str, password: str | bytes) -> str:
    raw = password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()


@pytest.fixture(scope="module")
def users() -> WebConfig:
    hashed = bcrypt.hashpw(LONG_PASSWORD.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    return WebConfig.model_validate(
        {
            "basic_auth_users": {"ops": hashed},
            "bearer_tokens": [
                {"name": "acme", "sha256": sha("acme-token"), "tenants": ["acme"]},
                {"name": "ops-token", "sha256": sha("ops-token")},
            ],
        }
    )


# --- failing closed in the web config ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bearer_tokens: [{name: t, sha256: " + sha("x") + ", tenants: []}]\n", "at least 1"),
        ("bearer_tokens: [{name: t, sha256: " + sha("x") + ", tenants: }]\n", "tenants is null"),
        ("bearer_tokens: []\n", "at least 1"),
        ("bearer_tokens:\n", "bearer_tokens is null"),
        ("basic_auth_users: {}\n", "at least 1"),
        ("basic_auth_users:\n", "basic_auth_users is null"),
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_empty_lists_and_files_grant_nothing(tmp_path: Path, text: str, expected: str) -> None:
    """An empty or null list where credentials or scopes go is an error, never 'all'."""
    assert any(expected in p for p in problems(tmp_path, text)), problems(tmp_path, text)


def test_duplicate_token_hashes_and_names_are_refused(tmp_path: Path) -> None:
    """Two tokens with one hash would let order decide who the caller is."""
    text = (
        f"bearer_tokens:\n  - {{name: acme, sha256: {sha('x')}, tenants: [acme]}}\n"
        f"  - {{name: ops, sha256: {sha('x')}}}\n  - {{name: ops, sha256: {sha('y')}}}\n"
    )
    found = problems(tmp_path, text)
    assert any("same sha256 is used more than once (hash not shown)" in p for p in found)
    assert sha("x") not in repr(found)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    """Names identify principals in logs: two tokens may not share one."""
    text = (
        f"bearer_tokens: [{{name: ops, sha256: {sha('x')}}}, {{name: ops, sha256: {sha('y')}}}]\n"
    )
    assert any("same name is used more than once ops" in p for p in problems(tmp_path, text))


@pytest.mark.parametrize("cost", ["03", "32", "99"])
def test_bcrypt_cost_outside_4_to_31_is_refused_at_load(tmp_path: Path, cost: str) -> None:
    """A hash bcrypt cannot check is a config error, not a 500 on every login."""
    valid = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()
    text = f'basic_auth_users: {{ops: "$2y${cost}${valid[7:]}"}}\n'
    assert any("cost of 4 to 31" in p for p in problems(tmp_path, text))


def test_scopes_naming_unknown_tenants_are_reported_per_token(users: WebConfig) -> None:
    """A token scoped to a tenant the config lacks (yet) is reported with the missing ids;
    unscoped tokens are not scoped tokens and are not listed."""
    assert unknown_scopes(users, ["acme", "globex"]) == {"acme": []}
    assert unknown_scopes(users, ["globex"]) == {"acme": ["acme"]}


# --- credentials ---------------------------------------------------------------------------


async def test_bearer_tokens_map_to_their_scope(users: WebConfig) -> None:
    """A scoped token gets exactly its tenants; an unscoped one all; others nothing."""
    auth = Authenticator(users)
    assert await auth.authenticate("Bearer acme-token") == Principal("acme", frozenset({"acme"}))
    assert await auth.authenticate("Bearer ops-token") == Principal("ops-token", None)
    assert await auth.authenticate("bearer  ops-token ") == Principal("ops-token", None)
    assert await auth.authenticate("Bearer nope") is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer \udcff",  # what aiohttp makes of a raw 0xff byte
        "Bearer \ud800",
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Basic \udcff",
        basic_header("ops", b"with\0nul"),
        basic_header("ops", "A" * 200),
        "Digest x",
        "ops-token",
    ],
)
async def test_malformed_credentials_are_refused_not_errors(
    users: WebConfig, header: str | None
) -> None:
    """Every malformed credential is a plain refusal (None), never an exception."""
    assert await Authenticator(users).authenticate(header) is None


async def test_passwords_longer_than_72_bytes_compare_by_their_prefix(users: WebConfig) -> None:
    """As Go's bcrypt in exporter-toolkit: the first 72 bytes decide, no error."""
    auth = Authenticator(users)
    assert await auth.authenticate(basic_header("ops", LONG_PASSWORD)) == Principal("ops")
    assert await auth.authenticate(basic_header("ops", LONG_PASSWORD[:72])) == Principal("ops")
    assert await auth.authenticate(basic_header("ops", LONG_PASSWORD[:71])) is None


async def test_cached_logins_are_decided_without_hashing(users: WebConfig) -> None:
    """After one bcrypt check, the same credential is answered on the spot."""
    auth = Authenticator(users)
    header = basic_header("ops", LONG_PASSWORD)
    assert isinstance(auth.quick(header), BasicCredential)
    assert await auth.authenticate(header) == Principal("ops")
    assert auth.quick(header) == Principal("ops")
    assert isinstance(auth.quick(basic_header("ops", "other")), BasicCredential)


def test_decode_basic() -> None:
    """Passwords may hold colons; the user name may not be undecodable."""
    assert decode_basic(base64.b64encode(b"u:p:q").decode()) == BasicCredential("u", b"p:q")
    assert decode_basic("not base64!") is None


# --- limits ---------------------------------------------------------------------------------


def test_checks_in_flight_count_against_the_limit() -> None:
    """Ten concurrent checks block the eleventh before any of them has failed."""
    limiter = FailureLimiter(limit=10, window=60, clock=Clock())
    for _ in range(10):
        assert limiter.blocked_for("a") == 0
        limiter.begin("a")
    assert limiter.blocked_for("a") == 1.0
    for _ in range(10):
        limiter.end("a", failed=False)
    assert limiter.blocked_for("a") == 0


def test_failures_block_until_the_window_passes() -> None:
    """The tenth failure blocks (and says so once); the block lifts with the window."""
    clock = Clock()
    limiter = FailureLimiter(limit=10, window=60, clock=clock)
    blocking = []
    for _ in range(10):
        limiter.begin("a")
        blocking.append(limiter.end("a", failed=True))
    assert blocking == [False] * 9 + [True]
    assert limiter.blocked_for("a") == 60
    clock.now += 30
    assert limiter.blocked_for("a") == 30
    assert limiter.blocked_for("b") == 0
    clock.now += 31
    assert limiter.blocked_for("a") == 0


def test_limiter_table_is_bounded_under_an_address_spray() -> None:
    """A spray of addresses evicts the oldest entries; the table never grows past its bound."""
    limiter = FailureLimiter(limit=10, window=60, max_clients=100, clock=Clock())
    for i in range(10_000):
        limiter.begin(f"10.0.{i // 256}.{i % 256}")
        limiter.end(f"10.0.{i // 256}.{i % 256}", failed=True)
    assert len(limiter) == 100


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, "unknown"),
        ("not-an-ip", "not-an-ip"),
    ],
)
def test_client_keys_aggregate_ipv6_by_64(remote: str | None, key: str) -> None:
    """One IPv6 host usually owns a /64: its addresses share one failure count."""
    assert client_key(remote) == key


def test_token_bucket_like_go_rate_limiter() -> None:
    """burst tokens at once, then one per interval; a burst of 0 admits nothing."""
    clock = Clock()
    bucket = TokenBucket(interval=1.0, burst=2, clock=clock)
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    clock.now += 1.0
    assert [bucket.allow() for _ in range(2)] == [True, False]
    assert not TokenBucket(interval=1.0, burst=0, clock=clock).allow()


# --- logs -----------------------------------------------------------------------------------


def test_redaction_of_credential_keys() -> None:
    """Any key naming a credential is redacted; others are kept."""
    event = {
        "event": "x",
        "password": "p",
        "client_secret": "s",
        "token": "t",
        "Authorization": "a",
        "tenant": "acme",
        "path": "/metrics",
    }
    assert redact(None, "info", dict(event)) == event | {
        "password": REDACTED,
        "client_secret": REDACTED,
        "token": REDACTED,
        "Authorization": REDACTED,
    }


def test_redaction_runs_in_the_configured_chain(capsys: pytest.CaptureFixture[str]) -> None:
    """The configured processors redact before rendering, in every format."""
    from exporter import logs

    try:
        for fmt in ("console", "logfmt", "json"):
            logs.configure("debug", fmt)
            structlog.get_logger("t").warning("oops", password="marker-secret-1")
    finally:  # later tests must not write to this test's captured stderr
        structlog.reset_defaults()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("oops") == 3 and err.count(REDACTED) == 3
    assert "marker-secret-1" not in err

"""TLS, basic auth, tenant-scoped bearer tokens and failure rate limits, over real HTTP(S)."""

import base64
import hashlib
import ssl
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import structlog

from exporter.config import ConfigError
from exporter.webconfig import WebConfig, load_web_config
from tests.conftest import ScratchDatabase, parse_samples
from tests.helpers import two_tenants
from tests.tls_helpers import make_ca, make_cert

PASSWORD = "correct horse battery staple"
ACME_TOKEN = "acme-token-5f1d0c3e8a7b"
OPS_TOKEN = "ops-token-9e2b7a4c1d6f"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_cert(directory, "server", "ca", "subjectAltName=IP:127.0.0.1")
    make_cert(directory, "client", "ca", "extendedKeyUsage=clientAuth")
    return directory


def web_config(tmp_path: Path, text: str) -> WebConfig:
    path = tmp_path / "web.yaml"
    path.write_text(text)
    return load_web_config(path)


def auth_config(tmp_path: Path) -> WebConfig:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return web_config(
        tmp_path,
        f"""
basic_auth_users:
  ops: "{hashed}"
bearer_tokens:
  - {{name: acme-grafana, sha256: {sha(ACME_TOKEN)}, tenants: [acme]}}
  - {{name: operators, sha256: {sha(OPS_TOKEN)}}}
""",
    )


@pytest.fixture
async def protected(database: ScratchDatabase, make_exporter, tmp_path: Path):
    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1),(2,'ops','done',2)")
    running = await make_exporter(two_tenants(database.dsn), web_config=auth_config(tmp_path))
    await running.run_all()
    return running


async def get(url: str, **kwargs) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        return response.status, await response.text()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_credentials_accepted_and_rejected(protected) -> None:
    """Basic auth and bearer tokens work; wrong or missing ones get 401; health stays open."""
    url = protected.url
    assert (await get(url + "/metrics", headers=basic("ops", PASSWORD)))[0] == 200
    assert (await get(url + "/metrics", headers=bearer(OPS_TOKEN)))[0] == 200
    assert (await get(url + "/metrics", headers=basic("ops", "nope")))[0] == 401
    assert (await get(url + "/metrics", headers=basic("nobody", PASSWORD)))[0] == 401
    assert (await get(url + "/metrics", headers=bearer("guess")))[0] == 401
    status, _ = await get(url + "/metrics")
    assert status == 401
    assert (await get(url + "/"))[0] == 401
    assert (await get(url + "/healthz"))[0] == 200
    assert (await get(url + "/readyz"))[0] == 200


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", 200),
        ("?tenant=acme", 200),
        ("?tenant=globex", 403),
        ("?tenant=acme&tenant=globex", 403),
        ("?tenant=GLOBEX", 403),
        ("?tenant=nobody", 403),
        ("?tenant[]=globex", 200),  # not the `tenant` parameter: ignored
        ("?tenant=acme%2Cglobex", 403),
        ("?TENANT=globex", 200),  # likewise
        ("?tenant=", 403),
    ],
)
async def test_scoped_token_never_sees_other_tenants(protected, query: str, expected: int) -> None:
    """Whatever the query string, a token scoped to acme gets acme's series or a 403."""
    status, text = await get(protected.url + "/metrics" + query, headers=bearer(ACME_TOKEN))
    assert status == expected, (status, text)
    assert "globex" not in text
    if status == 200:
        tenants = {dict(labels).get("tenant") for _, labels in parse_samples(text)}
        assert tenants == {"acme", None}


async def test_scoped_token_landing_and_reload(protected) -> None:
    """The landing page shows a scoped caller only its tenant."""
    status, page = await get(protected.url + "/", headers=bearer(ACME_TOKEN))
    assert status == 200 and "<td>acme</td>" in page and "globex" not in page


async def test_failed_logins_are_rate_limited_and_logged_without_the_secret(protected) -> None:
    """After ten failures a client is refused with 429, even with the right credential, and
    the log names the client, scheme and reason but never the presented secret; ten
    failures in a second make one line (sampled), the blocking one its own."""
    with structlog.testing.capture_logs() as logs:
        for _ in range(10):
            assert (await get(protected.url + "/metrics", headers=bearer("wrong-secret-xyz")))[
                0
            ] == 401
    status, _ = await get(protected.url + "/metrics", headers=bearer(OPS_TOKEN))
    assert status == 429
    failures = [e for e in logs if e["event"] == "authentication failed"]
    assert [(e["scheme"], e["reason"]) for e in failures] == [("bearer", "wrong")]
    assert [e["event"] for e in logs].count("client blocked") == 1
    assert "wrong-secret-xyz" not in repr(logs)
    assert (await get(protected.url + "/healthz"))[0] == 200


async def test_tls_handshake_and_client_certificates(
    database: ScratchDatabase, make_exporter, tmp_path: Path, certs: Path
) -> None:
    """TLS with a server certificate; in RequireAndVerifyClientCert mode a client without a
    certificate fails the handshake and one with a CA-signed certificate gets through."""
    tls = f"""
tls_server_config:
  cert_file: {certs / "server.crt"}
  key_file: {certs / "server.key"}
  client_ca_file: {certs / "ca.crt"}
  client_auth_type: RequireAndVerifyClientCert
"""
    running = await make_exporter(two_tenants(database.dsn), web_config=web_config(tmp_path, tls))
    assert running.url.startswith("https://")
    anonymous = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with pytest.raises(aiohttp.ClientError):
        await get(running.url + "/healthz", ssl=anonymous)
    with_cert = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with_cert.load_cert_chain(certs / "client.crt", certs / "client.key")
    assert (await get(running.url + "/healthz", ssl=with_cert))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await get(running.url.replace("https", "http") + "/healthz")


async def test_tls_without_client_certificates(
    database: ScratchDatabase, make_exporter, tmp_path: Path, certs: Path
) -> None:
    """Plain server TLS: a client trusting the CA connects; one that does not, fails."""
    server = f"cert_file: {certs / 'server.crt'}, key_file: {certs / 'server.key'}"
    tls = f"tls_server_config: {{{server}}}\n"
    running = await make_exporter(two_tenants(database.dsn), web_config=web_config(tmp_path, tls))
    trusting = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    assert (await get(running.url + "/healthz", ssl=trusting))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await get(running.url + "/healthz", ssl=ssl.create_default_context())


TLS_AB = "tls_server_config: {cert_file: a, key_file: b, client_auth_type: "


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("basic_auth_users: {ops: plaintext}\n", "basic_auth_users.ops: must be a bcrypt hash"),
        ("bearer_tokens: [{name: x, sha256: abc}]\n", "bearer_tokens[0].sha256: must be the"),
        ("tls_server_config: {cert_file: /no/c, key_file: /no/k}\n", "cannot load certificates"),
        (TLS_AB + "NoClientCert, client_ca_file: c}\n", "client CA is set but client_auth"),
        (TLS_AB + "RequestClientCert}\n", "client_auth_type"),
        ("bogus: 1\n", "bogus: unknown key; allowed here: basic_auth_users, bearer_tokens"),
    ],
)
def test_bad_web_config_is_rejected_with_its_location(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Web config mistakes are reported with where they are."""
    with pytest.raises(ConfigError) as caught:
        web_config(tmp_path, text)
    assert any(expected in p for p in caught.value.problems), caught.value.problems


async def test_reload_rotates_the_server_certificate(
    database: ScratchDatabase, make_exporter, tmp_path: Path, certs: Path
) -> None:
    """A reload with a new certificate (from another CA) serves it to the next handshake."""
    make_ca(tmp_path, "ca2")
    make_cert(tmp_path, "new", "ca2", "subjectAltName=IP:127.0.0.1")
    web = tmp_path / "web.yaml"

    def serve_with(cert: Path, key: Path) -> None:
        web.write_text(f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n")

    serve_with(certs / "server.crt", certs / "server.key")
    running = await make_exporter(
        two_tenants(database.dsn), web_config=load_web_config(web), web_config_file=web
    )
    old_ca = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    new_ca = ssl.create_default_context(cafile=str(tmp_path / "ca2.crt"))
    assert (await get(running.url + "/healthz", ssl=old_ca))[0] == 200
    serve_with(tmp_path / "new.crt", tmp_path / "new.key")
    assert await running.exporter.reload() == []
    assert (await get(running.url + "/healthz", ssl=new_ca))[0] == 200
    with pytest.raises(aiohttp.ClientError):
        await get(running.url + "/healthz", ssl=old_ca)

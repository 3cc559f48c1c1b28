"""exporter-toolkit parity: the cases of the toolkit's own `web/testdata` suite, written here as
config of our own with certificates made by openssl, loaded with relative paths while the
process runs from another directory. Each case names the toolkit file it mirrors and what the
toolkit does with it; where we differ, the reason is in DIFFERENCES (and docs/security.md).
"""

import ssl
from pathlib import Path

import aiohttp
import pytest

from exporter.config import ConfigError
from exporter.tls import GO_CIPHERS
from exporter.webconfig import WebConfig, load_web_config
from tests.conftest import ScratchDatabase
from tests.helpers import two_tenants
from tests.tls_helpers import make_ca, make_cert

SERVER = 'cert_file: "server.crt"\n  key_file: "server.key"\n'
IF_GIVEN = '  client_auth_type: "VerifyClientCertIfGiven"\n'
HASHES = {  # bcrypt.hashpw of alice123 and dave123, cost 4 to keep the suite fast
    "alice": "$2b$04$5rh9GAR8Ic/GfKrscyq6re/tzSDe4/5ds5inMY4wS/WYypxv4rO7K",
    "dave": "$2b$04$r/4Da5nRHRqCX7AaCunNkOgUbZ64lEj2VI0W.tOVa/NRXT/WPXa3q",
}
USERS = "basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in HASHES.items())

# toolkit file -> (our config text, what the toolkit says: "ok" or the error it gives)
CASES: dict[str, tuple[str, str]] = {
    "web_config_empty.yml": ("", "ok"),
    "web_config_junk.yml": ("hWkNKCp3fvIx3jKn\nTuEjdwNS8A2vYdFb\n", "YAML error"),
    "web_config_junk_key.yml": ('tls_server_config:\n  cert_filse: "server.crt"\n', "YAML error"),
    "web_config_noAuth.good.yml": (f"tls_server_config:\n  {SERVER}{IF_GIVEN}", "ok"),
    "web_config_noAuth.good.blocking.yml": (
        f'tls_server_config:\n  {SERVER}  client_auth_type: "RequireAndVerifyClientCert"\n',
        "ok",
    ),
    "web_config_noAuth.bad.yml": (
        f'tls_server_config:\n  {SERVER}  client_ca_file: "client_selfsigned.pem"\n',
        "ClientCA set without policy",
    ),
    "web_config_auth_clientCAs_invalid.bad.yml": (
        f'tls_server_config:\n  {SERVER}{IF_GIVEN}  client_ca_file: "somefile"\n',
        "No such file",
    ),
    "web_config_noAuth_certPath_empty.bad.yml": (
        'tls_server_config:\n  cert_file: ""\n  key_file: "server.key"\n',
        "Invalid Cert or CertPath",
    ),
    "web_config_noAuth_cert_empty.bad.yml": (
        'tls_server_config:\n  cert: ""\n  key_file: "server.key"\n',
        "Invalid Cert or CertPath",
    ),
    "web_config_noAuth_keyPath_empty.bad.yml": (
        'tls_server_config:\n  cert_file: "server.crt"\n  key_file: ""\n',
        "Invalid Key or KeyPath",
    ),
    "web_config_noAuth_certPath_invalid.bad.yml": (
        'tls_server_config:\n  cert_file: "somefile"\n  key_file: "server.key"\n',
        "No such file",
    ),
    "web_config_noAuth_keyPath_invalid.bad.yml": (
        'tls_server_config:\n  cert_file: "server.crt"\n  key_file: "somefile"\n',
        "No such file",
    ),
    "web_config_auth_user_list_invalid.bad.yml": (
        f"tls_server_config:\n  {SERVER}basic_auth_users:\n  john: doe\n",
        "Bad password",
    ),
    "web_config_noAuth_inventedCiphers.bad.yml": (
        f"tls_server_config:\n  {SERVER}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2"
        "048]\n",
        "Unknown cipher",
    ),
    "web_config_noAuth_inventedCurves.bad.yml": (
        f"tls_server_config:\n  {SERVER}  curve_preferences: [CurveP257]\n",
        "Unknown curve",
    ),
    "web_config_noAuth_wrongTLSVersion.bad.yml": (
        f"tls_server_config:\n  {SERVER}  min_version: TLS111\n",
        "Unknown TLS version",
    ),
    "web_config_noAuth_allCiphers.good.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}  cipher_suites: [{', '.join(GO_CIPHERS)}]\n",
        "ok",
    ),
    "web_config_noAuth_someCiphers.good.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_"
        "GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  min_version: TLS12\n"
        "  max_version: TLS12\n",
        "ok",
    ),
    "web_config_noAuth_someCiphers_noOrder.good.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_"
        "GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n  min_version: TLS12\n  max_version: TLS12\n",
        "ok",
    ),
    "web_config_noAuth_allCurves.good.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}"
        "  curve_preferences: [CurveP256, CurveP384, CurveP521, X25519]\n",
        "ok",
    ),
    "web_config_noAuth_someCurves.good.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}  min_version: TLS13\n"
        "  curve_preferences: [CurveP521]\n",
        "ok",
    ),
    "web_config_noAuth_noHTTP2.good.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\n"
        "http_server_config:\n  http2: false\n",
        "ok",
    ),
    "web_config_noAuth_noHTTP2Cipher.bad.yml": (
        f"tls_server_config:\n  {SERVER}{IF_GIVEN}"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\n",
        "No HTTP2 cipher",
    ),
    "web_config_noAuth_tlsInline.good.yml": ("INLINE", "ok"),
    "tls_config_noAuth.requireanyclientcert.good.yml": (
        f'tls_server_config:\n  {SERVER}  client_auth_type: "RequireAnyClientCert"\n',
        "ok",
    ),
    "tls_config_noAuth.requireanyclientcertkeyinline.good.yml": ("INLINE_KEY_ANY", "ok"),
    "tls_config_noAuth.requireandverifyclientcert.good.yml": (
        f'tls_server_config:\n  {SERVER}  client_auth_type: "RequireAndVerifyClientCert"\n'
        '  client_ca_file: "client_selfsigned.pem"\n',
        "ok",
    ),
    "web_config_auth_client_san.good.yaml": (
        f'tls_server_config:\n  {SERVER}  client_auth_type: "RequireAndVerifyClientCert"\n'
        '  client_ca_file: "ca.crt"\n  client_allowed_sans: ["one", "test3", "two"]\n',
        "ok",
    ),
    "web_config_auth_client_san.bad.yaml": (
        f'tls_server_config:\n  {SERVER}  client_auth_type: "RequireAndVerifyClientCert"\n'
        '  client_ca_file: "ca.crt"\n  client_allowed_sans: ["bad"]\n',
        "ok",  # loads; the handshake refuses the client
    ),
    "web_config_headers.good.yml": (
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000; includeSubDomains\n"
        "    X-Content-Type-Options: nosniff\n    X-XSS-Protection: 1\n"
        "    Content-Security-Policy: \"default-src 'self' *.test.example.net\"\n",
        "ok",
    ),
    "web_config_headers_content_type_options.bad.yml": (
        "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
        "Invalid value",
    ),
    "web_config_headers_frame_options.bad.yml": (
        "http_server_config:\n  headers:\n    X-Frame-Options: foo\n",
        "Invalid value",
    ),
    "web_config_headers_extra_header.bad.yml": (
        "http_server_config:\n  headers:\n    Content-Type: foo\n",
        "Invalid header",
    ),
    "web_config_rate_limiter_nonblocking.yaml": ("rate_limit:\n  interval: 0\n  burst: 0\n", "ok"),
    "web_config_rate_limiter_one_second.yaml": (
        'rate_limit:\n  interval: "1s"\n  burst: 0\n',
        "ok",
    ),
    "web_config_users.good.yml": (f"tls_server_config:\n  {SERVER}{USERS}", "ok"),
    "web_config_users_noTLS.good.yml": (USERS, "ok"),
}
# Where we refuse what the toolkit accepts, and why (what the error must say).
DIFFERENCES = {
    "web_config_empty.yml": "the file is empty",  # fail closed: no silent open endpoints
    "tls_config_noAuth.requireanyclientcert.good.yml": "Python's ssl module cannot",
    "tls_config_noAuth.requireanyclientcertkeyinline.good.yml": "Python's ssl module cannot",
    "web_config_noAuth_allCurves.good.yml": "one curve only",
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server.crt/key for 127.0.0.1; a self-signed client cert; a CA-signed client with SANs."""
    directory = tmp_path_factory.mktemp("testdata")
    make_ca(directory, "ca")
    make_cert(directory, "server", "ca", "subjectAltName=IP:127.0.0.1")
    make_ca(directory, "client_selfsigned")
    (directory / "client_selfsigned.crt").rename(directory / "client_selfsigned.pem")
    make_cert(directory, "client2", "ca", "subjectAltName=DNS:test3,DNS:test4\n"
              "extendedKeyUsage=clientAuth")  # fmt: skip
    return directory


def text_of(name: str, certs: Path) -> str:
    text = CASES[name][0]
    if not text.startswith("INLINE"):
        return text
    indent = lambda pem: "    " + pem.strip().replace("\n", "\n    ")  # noqa: E731
    cert, key = (certs / "server.crt").read_text(), (certs / "server.key").read_text()
    if text == "INLINE_KEY_ANY":
        any_cert = '  client_auth_type: "RequireAnyClientCert"\n'
        return f'tls_server_config:\n  cert_file: "server.crt"\n  key: |\n{indent(key)}\n{any_cert}'
    return f"tls_server_config:\n  cert: |\n{indent(cert)}\n  key: |\n{indent(key)}\n{IF_GIVEN}"


def load_from_elsewhere(name: str, certs: Path, monkeypatch: pytest.MonkeyPatch) -> WebConfig:
    """Load the case from the certificates' directory while running from another one."""
    path = certs / name
    path.write_text(text_of(name, certs), encoding="utf-8")
    monkeypatch.chdir(certs.parent)
    return load_web_config(path)


@pytest.mark.parametrize("name", sorted(CASES))
def test_toolkit_case(name: str, certs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Accepted where the toolkit accepts, refused with a reason where it refuses, and
    refused with our documented reason where we differ."""
    expected = CASES[name][1]
    if expected == "ok" and name not in DIFFERENCES:
        config = load_from_elsewhere(name, certs, monkeypatch)
        tls = config.tls_server_config
        if tls is not None and tls.cert_file is not None:
            assert tls.cert_file == certs / "server.crt"
        return
    with pytest.raises(ConfigError) as caught:
        load_from_elsewhere(name, certs, monkeypatch)
    if name in DIFFERENCES:
        assert any(DIFFERENCES[name] in p for p in caught.value.problems), caught.value.problems
    assert caught.value.problems and all(p.strip() for p in caught.value.problems)


def test_parity_count() -> None:
    """Of the toolkit's accepted files, all but the documented differences load here."""
    accepted = [n for n, (_, outcome) in CASES.items() if outcome == "ok"]
    assert len(accepted) == 20
    assert len([n for n in accepted if n not in DIFFERENCES]) == 16


async def get_status(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as response:
        return response.status


def client_context(certs: Path, **settings: object) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    for name, value in settings.items():
        setattr(context, name, value)
    return context


async def serve(name: str, certs: Path, monkeypatch, make_exporter, database: ScratchDatabase):
    web = load_from_elsewhere(name, certs, monkeypatch)
    return await make_exporter(two_tenants(database.dsn), web_config=web)


async def test_inline_certificate_and_key_serve_tls(
    certs: Path, monkeypatch, make_exporter, database: ScratchDatabase
) -> None:
    """cert and key given inline in the file: the server presents that certificate."""
    running = await serve("web_config_noAuth_tlsInline.good.yml", certs, monkeypatch,
                          make_exporter, database)  # fmt: skip
    assert await get_status(running.url + "/healthz", client_context(certs)) == 200


async def test_cipher_suites_and_max_version_are_enforced(
    certs: Path, monkeypatch, make_exporter, database: ScratchDatabase
) -> None:
    """TLS 1.2 only, two RSA GCM suites: a TLS 1.3-only client and a client offering only
    other suites fail; a client offering one of them negotiates it."""
    running = await serve("web_config_noAuth_someCiphers.good.yml", certs, monkeypatch,
                          make_exporter, database)  # fmt: skip
    url = running.url + "/healthz"
    with pytest.raises(aiohttp.ClientError):
        await get_status(url, client_context(certs, minimum_version=ssl.TLSVersion.TLSv1_3))
    chacha = client_context(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    chacha.set_ciphers("ECDHE-RSA-CHACHA20-POLY1305")
    with pytest.raises(aiohttp.ClientError):
        await get_status(url, chacha)
    gcm = client_context(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    gcm.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
    assert await get_status(url, gcm) == 200


async def test_curve_preference_is_enforced(
    certs: Path, monkeypatch, make_exporter, database: ScratchDatabase
) -> None:
    """TLS 1.3 with P-521 only: a client that offers only X25519 fails, P-521 succeeds."""
    running = await serve("web_config_noAuth_someCurves.good.yml", certs, monkeypatch,
                          make_exporter, database)  # fmt: skip
    url = running.url + "/healthz"
    x25519 = client_context(certs)
    x25519.set_ecdh_curve("X25519")
    with pytest.raises(aiohttp.ClientError):
        await get_status(url, x25519)
    p521 = client_context(certs)
    p521.set_ecdh_curve("secp521r1")
    assert await get_status(url, p521) == 200


@pytest.mark.parametrize(
    ("name", "expected"),
    [("web_config_auth_client_san.good.yaml", 200), ("web_config_auth_client_san.bad.yaml", 403)],
)
async def test_client_allowed_sans(
    certs: Path, monkeypatch, make_exporter, database: ScratchDatabase, name: str, expected: int
) -> None:
    """A verified client certificate whose SANs include an allowed one gets through; one
    without is refused on every path (the toolkit fails its handshake)."""
    running = await serve(name, certs, monkeypatch, make_exporter, database)
    context = client_context(certs)
    context.load_cert_chain(certs / "client2.crt", certs / "client2.key")
    assert await get_status(running.url + "/healthz", context) == expected

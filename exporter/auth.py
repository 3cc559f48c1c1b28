"""Who is asking: basic auth (bcrypt) and bearer tokens (SHA-256), with failure rate limits."""

import base64
import binascii
import functools
import hashlib
import hmac
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import bcrypt

from exporter.webconfig import WebConfig

CACHE_SIZE = 1024
CACHE_SECONDS = 300.0
MAX_FAILURES, FAILURE_WINDOW = 10, 60.0


@functools.cache
def _dummy_hash() -> bytes:
    """Checked when the user is unknown, so a wrong name costs as long as a wrong password.

    Made on first use: hashing at import would cost every start-up a bcrypt round.
    """
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=10))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; `tenants` None means every tenant."""

    name: str
    tenants: frozenset[str] | None = None


ANONYMOUS = Principal("anonymous")


class Authenticator:
    """Checks credentials against a web config; caches bcrypt successes for a while."""

    def __init__(self, config: WebConfig) -> None:
        self._users = {u: h.encode() for u, h in config.basic_auth_users.items()}
        self._tokens = [
            (t.sha256.encode(), Principal(t.name, frozenset(t.tenants) if t.tenants else None))
            for t in config.bearer_tokens
        ]
        self.required = config.auth_required
        self.offers_basic = bool(self._users)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, header: str | None) -> Principal | None:
        """The principal for an Authorization header, or None if it does not prove one."""
        if not self.required:
            return ANONYMOUS
        if not header:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            return self._bearer(credential.strip())
        if scheme.lower() == "basic":
            return self._basic(credential.strip())
        return None

    def _bearer(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest().encode()
        found = None
        for expected, principal in self._tokens:  # compare with every token: constant time
            if hmac.compare_digest(digest, expected):
                found = principal
        return found

    def _basic(self, credential: str) -> Principal | None:
        try:
            user, _, password = base64.b64decode(credential, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if self._cached(key):
            return Principal(user)
        stored = self._users.get(user)
        ok = bcrypt.checkpw(password.encode(), stored or _dummy_hash()) and stored is not None
        if not ok:
            return None
        self._remember(key)
        return Principal(user)

    def _cached(self, key: bytes) -> bool:
        with self._lock:
            expires = self._cache.get(key)
        return expires is not None and expires > time.monotonic()

    def _remember(self, key: bytes) -> None:
        with self._lock:  # checks run in worker threads
            self._cache[key] = time.monotonic() + CACHE_SECONDS
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)


class FailureLimiter:
    """Blocks a client address after too many failed authentications in a window."""

    def __init__(self, limit: int = MAX_FAILURES, window: float = FAILURE_WINDOW) -> None:
        self._limit, self._window = limit, window
        self._failures: dict[str, deque[float]] = {}

    def blocked_for(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        failures = self._recent(client)
        if len(failures) < self._limit:
            return 0.0
        return max(0.0, failures[0] + self._window - time.monotonic())

    def failed(self, client: str) -> None:
        """Record a failed attempt."""
        self._failures.setdefault(client, deque()).append(time.monotonic())
        if len(self._failures) > 10_000:  # bound memory under a spray of addresses
            self._failures = {c: d for c, d in self._failures.items() if self._recent(c)}

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque())
        while failures and failures[0] < time.monotonic() - self._window:
            failures.popleft()
        return failures

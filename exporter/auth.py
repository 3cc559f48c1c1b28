"""Who is asking: basic auth (bcrypt) and bearer tokens (SHA-256)."""

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import bcrypt
import structlog

from exporter.hashing import HashQueue
from exporter.logs import Sampled
from exporter.webconfig import WebConfig

log = structlog.get_logger(__name__)
# An expired token still in use is logged at most once a minute per token name.
_EXPIRED = Sampled("bearer token expired", 60.0)

CACHE_SIZE = 1024
CACHE_SECONDS = 300.0
# bcrypt reads at most 72 bytes of a password; Go's bcrypt (exporter-toolkit) compares
# that prefix, so a longer password is checked the same way instead of failing.
BCRYPT_MAX_BYTES = 72
DUMMY_COST = 10
Schedule = Callable[[Callable[[], bool]], Awaitable[bool]]


@functools.cache
def _dummy_hash(cost: int) -> bytes:
    """The hash an unknown user is checked against (at the dearest configured cost).

    A wrong name then costs as long as any wrong password. Made on first use: hashing at
    import would cost every start-up a bcrypt round.
    """
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))


def cost_of(hashed: bytes) -> int:
    """A bcrypt hash's cost (`$2y$12$...` is 12); the web config checked the format."""
    return int(hashed[4:6])


@dataclass(frozen=True)
class Principal:
    """An authenticated caller; `tenants` None means every tenant (operators)."""

    name: str
    tenants: frozenset[str] | None = None


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True)
class BasicCredential:
    """A decoded `Authorization: Basic` credential."""

    user: str
    password: bytes

    @property
    def cache_key(self) -> bytes:
        """What a successful check is remembered by (never the password itself)."""
        return hashlib.sha256(self.user.encode() + b"\0" + self.password).digest()


def decode_basic(credential: str) -> BasicCredential | None:
    """The user and password of a Basic credential, or None if it is malformed."""
    try:
        raw = base64.b64decode(credential.encode("ascii"), validate=True)
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        return BasicCredential(user.decode("utf-8"), password)
    except (binascii.Error, UnicodeError):
        return None


class Authenticator:
    """Checks credentials against a web config; caches bcrypt successes for a while."""

    def __init__(self, config: WebConfig) -> None:
        self._users = {u: h.encode() for u, h in (config.basic_auth_users or {}).items()}
        self._tokens = [
            (
                t.sha256.encode(),
                Principal(t.name, frozenset(t.tenants) if t.tenants is not None else None),
                t.expires.timestamp() if t.expires is not None else None,
            )
            for t in config.bearer_tokens or []
        ]
        self.required = config.auth_required
        self.offers_basic = bool(self._users)
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._dearest = max(map(cost_of, self._users.values()), default=DUMMY_COST)
        self._took: dict[int, float] = {}  # how long the last check at each cost took

    def quick(self, header: str | None) -> Principal | BasicCredential | None:
        """Decide without hashing: a principal, None (refused), or a credential to hash.

        Bearer tokens and cached basic logins are decided here, on the event loop, so they
        never wait behind bcrypt work.
        """
        if not self.required:
            return ANONYMOUS
        scheme, _, credential = (header or "").partition(" ")
        if scheme.lower() == "bearer":
            return self._bearer(credential.strip())
        if scheme.lower() != "basic":
            return None
        basic = decode_basic(credential.strip())
        if basic is None:
            return None
        return Principal(basic.user) if self._cached(basic.cache_key) else basic

    async def authenticate(
        self, header: str | None, schedule: Schedule | None = None
    ) -> Principal | None:
        """The principal for an Authorization header, or None if it does not prove one.

        Password checks run through `schedule` (the access layer's fair queue; a queue of
        their own otherwise). A refusal takes as long as a check at the dearest configured
        cost, whoever was named: the wait is a sleep, not hashing.
        """
        decided = self.quick(header)
        if not isinstance(decided, BasicCredential):
            return decided
        run = schedule or functools.partial(HashQueue().run, 0)
        if not await run(functools.partial(self.check_basic, decided)):
            await asyncio.sleep(self._padding(decided.user))
            return None
        self._remember(decided.cache_key)
        return Principal(decided.user)

    def check_basic(self, basic: BasicCredential) -> bool:
        """bcrypt-check a credential (slow on purpose: run it off the event loop)."""
        if self._dearest not in self._took:
            # Once per web config: how long a refusal must last, before the first one.
            self._timed(_dummy_hash(self._dearest), b"")
        stored = self._users.get(basic.user)
        try:
            ok = self._timed(stored or _dummy_hash(self._dearest), basic.password)
        except ValueError:  # e.g. a NUL byte bcrypt will not hash: not a valid login
            return False
        return ok and stored is not None

    def _timed(self, hashed: bytes, password: bytes) -> bool:
        began = time.perf_counter()
        ok = bcrypt.checkpw(password[:BCRYPT_MAX_BYTES], hashed)
        self._took[cost_of(hashed)] = time.perf_counter() - began
        return ok

    def _padding(self, user: str) -> float:
        """How much longer a refusal waits to take as long as one at the dearest cost."""
        stored = self._users.get(user)
        cost = cost_of(stored) if stored is not None else self._dearest
        took = self._took.get(cost, 0.0)
        return max(0.0, self._took.get(self._dearest, took) - took)

    def _bearer(self, token: str) -> Principal | None:
        try:
            # Headers arrive with undecodable bytes as surrogates; hash them as they came.
            raw = token.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate no byte sequence produces
            return None
        digest = hashlib.sha256(raw).hexdigest().encode()
        found, expires = None, None
        for expected, principal, until in self._tokens:  # every one compared: constant time
            if hmac.compare_digest(digest, expected):
                found, expires = principal, until
        if found is not None and expires is not None and time.time() >= expires:
            left_out = _EXPIRED.allow(found.name)
            if left_out is not None:
                log.warning("bearer token expired", name=found.name, left_out=left_out)
            return None
        return found

    def _cached(self, key: bytes) -> bool:
        expires = self._cache.get(key)
        return expires is not None and expires > time.monotonic()

    def _remember(self, key: bytes) -> None:
        self._cache[key] = time.monotonic() + CACHE_SECONDS
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

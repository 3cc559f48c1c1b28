"""Request limits: failed authentications per client, and a token bucket for all requests."""

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_FAILURES, FAILURE_WINDOW = 10, 60.0
MAX_CLIENTS = 10_000
Clock = Callable[[], float]


def client_key(remote: str | None) -> str:
    """The address a limit applies to: IPv4 as is, IPv6 by its /64 (one host's usual share)."""
    if not remote:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if not isinstance(address, ipaddress.IPv6Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)
    pending: int = 0


class FailureLimiter:
    """Blocks a client after too many failed authentications in a window.

    Checks still running count as failures until they end, so concurrent guesses cannot get
    past the limit. Clients are kept in a bounded LRU table: every operation is O(1),
    whatever the number of addresses an attacker sprays from.
    """

    def __init__(
        self,
        limit: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        max_clients: int = MAX_CLIENTS,
        clock: Clock = time.monotonic,
    ) -> None:
        self._limit, self._window, self._max = limit, window, max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def blocked_for(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        entry = self._clients.get(client)
        if entry is None:
            return 0.0
        self._expire(entry)
        if len(entry.failures) + entry.pending < self._limit:
            return 0.0
        if len(entry.failures) < self._limit:
            return 1.0  # blocked by checks in flight: they end within a second or two
        return max(1.0, entry.failures[0] + self._window - self._clock())

    def score(self, client: str) -> int:
        """Recent failures plus checks in flight: who is served first (lower) when checks wait."""
        entry = self._clients.get(client)
        if entry is None:
            return 0
        self._expire(entry)
        return len(entry.failures) + entry.pending

    def begin(self, client: str) -> None:
        """A check for `client` starts; it counts against the limit until `end`."""
        self._entry(client).pending += 1

    def end(self, client: str, failed: bool) -> bool:
        """A check ends; returns True when this failure is the one that blocks the client."""
        entry = self._entry(client)
        entry.pending = max(0, entry.pending - 1)
        if not failed:
            return False
        entry.failures.append(self._clock())
        self._expire(entry)
        return len(entry.failures) == self._limit

    def _entry(self, client: str) -> _Client:
        entry = self._clients.get(client)
        if entry is None:
            entry = self._clients[client] = _Client()
            if len(self._clients) > self._max:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        return entry

    def _expire(self, entry: _Client) -> None:
        horizon = self._clock() - self._window
        while entry.failures and entry.failures[0] < horizon:
            entry.failures.popleft()

    def __len__(self) -> int:
        return len(self._clients)


class TokenBucket:
    """exporter-toolkit's `rate_limit`: one token per `interval`, at most `burst` held.

    As with Go's rate.Limiter, a burst of 0 admits nothing.
    """

    def __init__(self, interval: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._interval, self._burst, self._clock = interval, burst, clock
        self._tokens = float(burst)
        self._last = clock()

    def allow(self) -> bool:
        """Take a token if one is there."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

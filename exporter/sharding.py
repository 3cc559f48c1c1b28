"""Which tenants this replica collects: rendezvous hashing of tenant ids over N shards.

Each tenant goes to the shard with the highest weight hash(shard, tenant). Every replica
computes the same answer alone (no coordination), and changing N from n to n + 1 moves only
the tenants the new shard wins, about 1/(n + 1) of them; no tenant moves between old shards.
"""

import hashlib
import re
import socket
from dataclasses import dataclass

from exporter.exposition import Family, format_value
from exporter.store import Snapshot

_ORDINAL = re.compile(r"-(\d+)$")  # a StatefulSet pod is NAME-0, NAME-1, ...

SHARD_INFO = Family(
    "cockpit_exporter_shard_info", "gauge", "This replica's shard and the number of shards."
)
SHARD_TENANTS = Family(
    "cockpit_exporter_shard_tenants", "gauge", "Tenants this replica's shard collects."
)
FAMILIES = (SHARD_INFO, SHARD_TENANTS)


class ShardError(ValueError):
    """--shard / --total-shards do not name a shard; the message says why."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `total` (0-based)."""

    index: int = 0
    total: int = 1

    def owns(self, tenant: str) -> bool:
        """Whether this shard collects `tenant`."""
        return self.total == 1 or owner(tenant, self.total) == self.index


def owner(tenant: str, total: int) -> int:
    """The shard of `tenant` among `total`: the one with the highest weight."""
    return max(range(total), key=lambda shard: _weight(shard, tenant))


def _weight(shard: int, tenant: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{tenant}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def resolve(shard: str, total: int, hostname: str | None = None) -> Shard:
    """The shard from the settings; `auto` takes the index from a hostname ending in -I."""
    if total < 1:
        raise ShardError(f"--total-shards {total}: at least 1")
    if shard == "auto":
        name = hostname if hostname is not None else socket.gethostname()
        found = _ORDINAL.search(name)
        if found is None:
            raise ShardError(f"--shard auto: hostname {name!r} does not end in -NUMBER")
        index = int(found.group(1))
    elif shard.isdigit():
        index = int(shard)
    else:
        raise ShardError(f"--shard {shard!r}: a number from 0, or auto")
    if index >= total:
        raise ShardError(f"--shard {index} of --total-shards {total}: shards are 0 to {total - 1}")
    return Shard(index, total)


def shard_snapshot(shard: Shard, tenants: int) -> Snapshot:
    """The shard's identity and its tenant count: operators only, like the config metrics."""
    info = f'{SHARD_INFO.name}{{shard="{shard.index}",total="{shard.total}"}} 1\n'
    owned = f"{SHARD_TENANTS.name} {format_value(tenants)}\n"
    bodies = {SHARD_INFO.name: info.encode(), SHARD_TENANTS.name: owned.encode()}
    return Snapshot(tenant=None, bodies=bodies, operators_only=True)

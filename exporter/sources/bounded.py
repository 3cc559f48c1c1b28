"""Upstream answers within bounds: bytes after decompression, and the JSON values they hold.

Every body is read in chunks and the read stops at the limit, so a gzip bomb never inflates
past it (aiohttp >= 3.13.3 inflates each received chunk a bounded step at a time). JSON is
decoded by C code that holds the GIL, so a thread would not keep the event loop free: the
number of values a body may hold is bounded instead, which bounds the decoding's time and
memory (docs/performance.md has the figures).
"""

import gc
import json

import aiohttp

from exporter.errors import CollectionError
from exporter.schema import MAX_RESPONSE_BYTES

DEFAULT_MAX_BYTES = MAX_RESPONSE_BYTES  # limits.max_response_bytes' default
CHUNK = 64 * 1024
# At most one JSON value per this many bytes of the size limit: 1,048,576 at 16 MiB, which
# decode in about 0.1 s whatever their kind (empty arrays and short floats are the slowest).
BYTES_PER_VALUE = 16


def too_large(endpoint: str, limit: int) -> CollectionError:
    """The `too_large` failure, naming the limit and the setting that raises it."""
    return CollectionError(
        "too_large",
        f"{endpoint}: response larger than {limit:,} bytes after decompression"
        " (max_response_bytes)",
    )


async def read_body(response: aiohttp.ClientResponse, limit: int, endpoint: str) -> bytes:
    """The body, decompressed, or a `too_large` failure as soon as it passes `limit` bytes."""
    encoded = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    declared = response.content_length
    if declared is not None and declared > limit and not encoded:
        raise too_large(endpoint, limit)
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK):
        if len(body) + len(chunk) > limit:
            raise too_large(endpoint, limit)
        body += chunk
    return bytes(body)


def value_count(body: bytes) -> int:
    """An upper bound of the values and keys in a JSON text, at the speed of a byte scan.

    Separators inside strings count too: the bound errs on the safe side.
    """
    return sum(body.count(c) for c in (b",", b":", b"[", b"{")) + 1


def decode_json(endpoint: str, body: bytes, limit: int = DEFAULT_MAX_BYTES) -> object:
    """The body as JSON, or `too_large` past the value bound, or a `decode` failure."""
    most = max(1, limit // BYTES_PER_VALUE)
    # A body holds at most one value per byte: only a longer one needs the scan.
    if len(body) >= most and value_count(body) > most:
        raise CollectionError(
            "too_large",
            f"{endpoint}: response holds more than {most:,} JSON values"
            f" (one per {BYTES_PER_VALUE} bytes of max_response_bytes)",
        )
    # The collector would walk the heap again and again while millions of new containers
    # appear, which costs more than the decoding itself; nothing else runs meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return json.loads(body)
    except ValueError:
        raise CollectionError("decode", f"{endpoint}: response body is not JSON") from None
    finally:
        if collecting:
            gc.enable()

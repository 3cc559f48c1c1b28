"""gzip of a large, rarely changing body followed by a small part that changes every time.

The body, given as its pieces, is compressed once (the deflate stream is sync-flushed and
its compressor kept); each response copies that compressor to add the small part and closes
one valid gzip member, with the CRC combined incrementally. A scrape of an unchanged store never
recompresses megabytes.
"""

import struct
import zlib
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field

# Magic, deflate, no flags, no mtime, no extra flags, unknown OS (RFC 1952).
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass
class GzipPrefix:
    """The compressed form of the concatenated `chunks`, ready to be continued by any tail.

    The chunks are not kept: they would keep every body of their moment alive after the
    store has replaced them (25 MB at a thousand tenants). `version` says what they were.
    """

    chunks: InitVar[Iterable[bytes]]
    version: object = None
    compressed: bytes = field(init=False)
    _compressor: "zlib._Compress" = field(init=False, repr=False)
    _crc: int = field(init=False)
    _size: int = field(init=False)

    def __post_init__(self, chunks: Iterable[bytes]) -> None:
        # Chunk by chunk: the body is never joined (see store.Exposition).
        compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        out, crc, size = [_HEADER], 0, 0
        for chunk in chunks:
            out.append(compressor.compress(chunk))
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
        self.compressed = b"".join(out)
        self._compressor, self._crc, self._size = compressor, crc, size

    def with_tail(self, tail: bytes) -> bytes:
        """A complete gzip of the chunks followed by `tail`."""
        compressor = self._compressor.copy()
        rest = compressor.compress(tail) + compressor.flush()
        crc = zlib.crc32(tail, self._crc)
        size = (self._size + len(tail)) & 0xFFFFFFFF
        return self.compressed + rest + struct.pack("<II", crc, size)

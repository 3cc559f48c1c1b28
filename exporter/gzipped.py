"""gzip of a large, rarely changing body followed by a small part that changes every time.

The body is compressed once (the deflate stream is sync-flushed and its compressor kept);
each response copies that compressor to add the small part and closes one valid gzip
member, with the CRC combined incrementally. A scrape of an unchanged store never
recompresses megabytes.
"""

import struct
import zlib
from dataclasses import dataclass, field

# Magic, deflate, no flags, no mtime, no extra flags, unknown OS (RFC 1952).
_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclass
class GzipPrefix:
    """The compressed form of `body`, ready to be continued by any tail."""

    body: bytes
    compressed: bytes = field(init=False)
    _compressor: "zlib._Compress" = field(init=False, repr=False)
    _crc: int = field(init=False)

    def __post_init__(self) -> None:
        compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.compressed = (
            _HEADER + compressor.compress(self.body) + compressor.flush(zlib.Z_SYNC_FLUSH)
        )
        self._compressor = compressor
        self._crc = zlib.crc32(self.body)

    def with_tail(self, tail: bytes) -> bytes:
        """A complete gzip of `body + tail`."""
        compressor = self._compressor.copy()
        rest = compressor.compress(tail) + compressor.flush()
        crc = zlib.crc32(tail, self._crc)
        size = (len(self.body) + len(tail)) & 0xFFFFFFFF
        return self.compressed + rest + struct.pack("<II", crc, size)

"""Binary format of a cached list of token IDs.

Layout (little-endian), for IDs that need `width` bits (16 to 32):

    [header: `width` bytes] [ceil(count / 8) blocks of `width` bytes]

A block holds 8 token IDs: their low 16 bits as 8 x uint16, then `width - 16` bytes
in which byte j carries bit (16 + j) of each of the 8 IDs (bit i = ID i). So a
block of 8 IDs is exactly `width` bytes: cl100k_base (vocabulary 100,277, 17 bits)
costs 2.125 bytes per token, where uint16 would be wrong (cl100k has IDs of 17 bits)
and uint32 would waste a quarter.

The header is padded to one block (CRC-32, magic, version, width, count) so that
every value is a whole number of equal blocks: a batch of values joined end to end
is one 2-D array, and `decode_many` unpacks a whole MGET reply with a handful of
numpy operations instead of several per value.

The CRC-32 comes first and covers everything after it (the rest of the header and
the blocks), and is seeded with the CRC-32 of the Redis key, which binds a value to
its key: bytes copied from another text or another tokenizer's key fail the check
just as truncated or flipped bytes do. Covering the count too matters: a flipped bit
in it would otherwise return one ID more or fewer, read from the zero padding.
(The format's history and figures: docs/cachecore.md, "Keys and values".)
"""

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from cachecore.exceptions import CorruptValue

MAGIC = b"TK"
VERSION = 2  # 1: CRC after the count, over the blocks only (see above)
MIN_WIDTH = 16
MAX_WIDTH = 32
BLOCK_IDS = 8

_HEADER = struct.Struct("<I2sBBI")  # crc32 (of all that follows), magic, version, width, count
_CRC_SIZE = 4

# _HIGH_BITS[j][byte] = the 8 IDs' contributions of bit (16 + j) packed in `byte`:
# one table lookup replaces unpackbits + astype + shift on the hot path.
_HIGH_BITS = [
    np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.uint32)
    << (MIN_WIDTH + j)
    for j in range(MAX_WIDTH - MIN_WIDTH)
]


def width_for(max_id: int) -> int:
    """Bits per ID needed to store IDs up to `max_id` (at least 16)."""
    return max(MIN_WIDTH, int(max_id).bit_length())


def encode(ids: np.ndarray, *, key: bytes, width: int | None = None) -> bytes:
    """Serialise `ids` (any unsigned integer array) for storage under `key`.

    `width` lets a caller use one width for every value of a tokenizer (its
    vocabulary's) so that a batch of values decodes as one group; it is raised
    automatically if an ID does not fit.
    """
    ids = np.asarray(ids, dtype=np.uint32)
    count = int(ids.size)
    needed = width_for(int(ids.max())) if count else MIN_WIDTH
    width = max(width or MIN_WIDTH, needed)
    if width > MAX_WIDTH:
        raise ValueError(f"width {width} exceeds {MAX_WIDTH} bits")
    blocks = -(-count // BLOCK_IDS)
    padded = np.zeros(blocks * BLOCK_IDS, dtype=np.uint32)
    padded[:count] = ids
    body = np.empty((blocks, width), dtype=np.uint8)
    body[:, :16] = (padded & 0xFFFF).astype("<u2").view(np.uint8).reshape(blocks, 16)
    lanes = padded.reshape(blocks, BLOCK_IDS)
    for j in range(width - MIN_WIDTH):
        bits = ((lanes >> (MIN_WIDTH + j)) & 1).astype(np.uint8)
        body[:, 16 + j] = np.packbits(bits, axis=1, bitorder="little")[:, 0]
    covered = _HEADER.pack(0, MAGIC, VERSION, width, count)[_CRC_SIZE:].ljust(width - _CRC_SIZE, b"\0")
    covered += body.tobytes()
    return zlib.crc32(covered, zlib.crc32(key)).to_bytes(_CRC_SIZE, "little") + covered


def header_count(header: bytes) -> int:
    """Token count from the first bytes of a value (0 if they are not a header)."""
    if len(header) < _HEADER.size:
        return 0
    _, magic, version, _, count = _HEADER.unpack_from(header)
    return int(count) if magic == MAGIC and version == VERSION else 0


def decode(value: bytes, *, key: bytes) -> np.ndarray:
    """Decode one value; raises `CorruptValue` if it fails any check."""
    ids = decode_many([value], [key])[0]
    if ids is None:
        raise CorruptValue(f"corrupt token value under {key!r}")
    return ids


def _check(value: bytes, key: bytes) -> tuple[int, int] | None:
    """(width, count) of a value that passes every check, else None."""
    if len(value) < _HEADER.size:
        return None
    crc, magic, version, width, count = _HEADER.unpack_from(value)
    if magic != MAGIC or version != VERSION or not MIN_WIDTH <= width <= MAX_WIDTH:
        return None
    if len(value) != width * (1 + -(-count // BLOCK_IDS)):
        return None
    if zlib.crc32(memoryview(value)[_CRC_SIZE:], _seed(key)) != crc:
        return None
    return width, count


# CRC-32 of recently seen keys: the seeds of their values' checksums. A context asks
# for the same few dozen keys request after request, and a dict lookup costs a fifth
# of zlib.crc32 on an 80-byte key. Cleared wholesale when full: bounded, no LRU upkeep.
_KEY_SEEDS: dict[bytes, int] = {}
_KEY_SEEDS_MAX = 100_000


def _seed(key: bytes) -> int:
    seed = _KEY_SEEDS.get(key)
    if seed is None:
        if len(_KEY_SEEDS) >= _KEY_SEEDS_MAX:
            _KEY_SEEDS.clear()
        seed = _KEY_SEEDS[key] = zlib.crc32(key)
    return seed


def _seeds(keys: Sequence[bytes]) -> list[int]:
    try:
        return [_KEY_SEEDS[key] for key in keys]
    except KeyError:
        return [_seed(key) for key in keys]


def decode_many(values: Sequence[bytes | None], keys: Sequence[bytes]) -> list[np.ndarray | None]:
    """Decode an MGET reply: uint32 arrays for good values, None for missing or corrupt.

    Callers tell missing from corrupt by looking at `values[i] is None`. The arrays
    are non-overlapping views into one buffer per width.
    """
    decoded = decode_all(values, keys)
    if decoded is not None:
        return decoded  # type: ignore[return-value]
    return _decode_one_by_one(values, keys)


def decode_all(values: Sequence[bytes | None], keys: Sequence[bytes]) -> list[np.ndarray] | None:
    """The hit path: the IDs of every value if all are present, sound and of one width; else None.

    The same checks as `_check`, inlined in one loop, and one numpy decode for the
    whole batch. Deliberately not vectorised further: in a real request the CPU caches
    are cold (tiktoken, the database and the socket have just run), and some thirty
    distinct numpy calls cost more to bring back into cache than one turn per value of
    a small Python loop, though they win in a tight loop (figures: docs/cachecore.md).
    Any failure hands the batch to `decode_many`'s one-by-one path, which finds the
    culprits; only batches that go on to tokenize something take it.
    """
    if not values or None in values:  # `in` tests identity before equality: cheap on bytes
        return None
    first = values[0]
    if first is None or len(first) < _HEADER.size:
        return None
    width = first[7]  # every value must share the first one's width
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        return None
    unpack = _HEADER.unpack_from
    crc32 = zlib.crc32
    counts = []
    for value, seed in zip(values, _seeds(keys), strict=True):
        if value is None or len(value) < _HEADER.size:
            return None
        crc, magic, version, value_width, count = unpack(value)
        if (
            magic != MAGIC
            or version != VERSION
            or value_width != width
            # Whole blocks, one header block first: truncation or padding changes the length.
            or len(value) != width * ((count + 2 * BLOCK_IDS - 1) // BLOCK_IDS)
            or crc32(memoryview(value)[_CRC_SIZE:], seed) != crc
        ):
            return None
        counts.append(count)
    ids = _unpack(b"".join(values), width)  # type: ignore[arg-type]
    out = []
    start = BLOCK_IDS  # each value's IDs start after its header row
    for count in counts:
        out.append(ids[start : start + count])
        start += (count + 2 * BLOCK_IDS - 1) // BLOCK_IDS * BLOCK_IDS
    return out


def _decode_one_by_one(values: Sequence[bytes | None], keys: Sequence[bytes]) -> list[np.ndarray | None]:
    """Any batch: each value checked on its own, the good ones decoded per width."""
    out: list[np.ndarray | None] = [None] * len(values)
    groups: dict[int, list[tuple[int, int]]] = {}
    for i, value in enumerate(values):
        if value is not None and (checked := _check(value, keys[i])) is not None:
            groups.setdefault(checked[0], []).append((i, checked[1]))
    for width, members in groups.items():
        ids = _unpack(b"".join([values[i] or b"" for i, _ in members]), width)
        start = BLOCK_IDS  # skip the first header row
        for i, count in members:
            out[i] = ids[start : start + count]
            start += (1 + -(-count // BLOCK_IDS)) * BLOCK_IDS
    return out


def _unpack(joined: bytes, width: int) -> np.ndarray:
    """Every row of values joined end to end, 8 IDs per row, header rows included.

    Strided views over the bytes avoid copying per value; callers slice the header
    rows' junk IDs away.
    """
    rows = len(joined) // width
    low = np.ndarray((rows, BLOCK_IDS), "<u2", joined, 0, (width, 2))
    ids = low.astype(np.uint32).reshape(-1)
    for j in range(width - MIN_WIDTH):
        high = np.ndarray((rows,), np.uint8, joined, 16 + j, (width,))
        # take(), not table[high]: same result, several times faster for this shape.
        ids |= _HIGH_BITS[j].take(high, axis=0).reshape(-1)
    return ids

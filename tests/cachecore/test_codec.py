import numpy as np
import pytest

from cachecore import codec
from cachecore.exceptions import CorruptValue

KEY = b"tc:v1:tok:fp:digest"


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 300, 1001])
@pytest.mark.parametrize("top", [2**16 - 1, 2**17 - 1, 2**20, 2**32 - 1])
def test_ids_round_trip_at_every_width_and_length(count: int, top: int) -> None:
    rng = np.random.default_rng(count)
    ids = rng.integers(0, top, size=count, dtype=np.uint64).astype(np.uint32)
    if count:
        ids[-1] = top
    decoded = codec.decode(codec.encode(ids, key=KEY), key=KEY)
    assert decoded.dtype == np.uint32
    assert np.array_equal(decoded, ids)


def test_cl100k_prose_costs_at_most_three_bytes_per_token(pydoc_chunks: list[str], cl100k) -> None:
    ids = [cl100k.encode(text) for text in pydoc_chunks[:200]]
    stored = sum(len(codec.encode(chunk, key=KEY, width=17)) for chunk in ids)
    tokens = sum(chunk.size for chunk in ids)
    assert stored / tokens <= 3.0
    assert any((chunk >= 2**16).any() for chunk in ids), "17-bit IDs must be exercised"


def test_a_batch_of_mixed_widths_and_missing_values_decodes_in_place() -> None:
    arrays = [np.arange(10, dtype=np.uint32), np.array([70000, 1], dtype=np.uint32), np.array([], dtype=np.uint32)]
    keys = [b"a", b"b", b"c", b"d"]
    values = [
        codec.encode(arrays[0], key=b"a"),
        codec.encode(arrays[1], key=b"b"),
        None,
        codec.encode(arrays[2], key=b"d"),
    ]
    out = codec.decode_many(values, keys)
    assert np.array_equal(out[0], arrays[0]) and np.array_equal(out[1], arrays[1])
    assert out[2] is None
    assert out[3] is not None and out[3].size == 0


def test_truncated_flipped_and_misplaced_values_are_rejected() -> None:
    value = codec.encode(np.arange(100, dtype=np.uint32) * 1000, key=KEY)
    flipped = bytearray(value)
    flipped[40] ^= 0x01
    for bad in (value[:-1], value[:5], b"", bytes(flipped), b"garbage" * 10):
        with pytest.raises(CorruptValue):
            codec.decode(bad, key=KEY)
    with pytest.raises(CorruptValue):  # same bytes under another text's or tokenizer's key
        codec.decode(value, key=b"tc:v1:tok:otherfp:digest")


def _batch(n: int = 29) -> tuple[list[bytes], list[bytes], list[np.ndarray]]:
    rng = np.random.default_rng(n)
    arrays = [rng.integers(0, 100_277, size=int(rng.integers(1, 400)), dtype=np.uint32) for _ in range(n)]
    keys = [f"tc:v1:tok:fp:{i:064x}".encode() for i in range(n)]
    return [codec.encode(ids, key=key, width=17) for ids, key in zip(arrays, keys, strict=True)], keys, arrays


def test_a_full_hit_batch_decodes_in_one_pass_like_the_general_path() -> None:
    values, keys, arrays = _batch()
    decoded = codec.decode_all(values, keys)
    assert decoded is not None
    assert all(np.array_equal(got, want) for got, want in zip(decoded, arrays, strict=True))
    assert all(got.dtype == np.uint32 for got in decoded)


def test_one_bad_value_in_a_batch_is_pinpointed_and_the_others_still_decode() -> None:
    values, keys, arrays = _batch()
    good = values[5]
    flipped = bytearray(good)
    flipped[-3] ^= 0x10
    header_flipped = bytearray(good)
    header_flipped[4] ^= 0x01  # the count
    other_key = codec.encode(arrays[5], key=b"tc:v1:tok:otherfp:digest", width=17)
    for bad in (good[:-1], good[:-17], good + b"\0" * 17, bytes(flipped), bytes(header_flipped), other_key, b""):
        batch = [*values[:5], bad, *values[6:]]
        assert codec.decode_all(batch, keys) is None
        decoded = codec.decode_many(batch, keys)
        assert decoded[5] is None
        assert all(np.array_equal(decoded[i], arrays[i]) for i in range(len(arrays)) if i != 5)  # type: ignore[arg-type]


def test_missing_values_and_mixed_widths_take_the_general_path() -> None:
    values, keys, arrays = _batch(4)
    assert codec.decode_all([None, *values[1:]], keys) is None
    wide = codec.encode(arrays[2], key=keys[2], width=20)
    mixed = [values[0], values[1], wide, values[3]]
    assert codec.decode_all(mixed, keys) is None
    decoded = codec.decode_many(mixed, keys)
    assert all(np.array_equal(got, want) for got, want in zip(decoded, arrays, strict=True))  # type: ignore[arg-type]


def test_the_key_seed_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_KEY_SEEDS", {})
    monkeypatch.setattr(codec, "_KEY_SEEDS_MAX", 10)
    values, keys, _ = _batch(25)
    decoded = codec.decode_all(values, keys)
    assert decoded is not None and len(codec._KEY_SEEDS) <= 25
    for i in range(100):
        codec.decode_many([values[0]], [keys[0]])
        codec._seed(f"key {i}".encode())
    assert len(codec._KEY_SEEDS) <= 10


def test_every_header_bit_is_covered_by_the_checksum() -> None:
    # Version 1 checked only the blocks: a flip in the low bits of the count kept the
    # length valid and handed out one ID more or fewer.
    key = KEY
    value = codec.encode(np.arange(203, dtype=np.uint32) * 397, key=key, width=17)
    for byte in range(17):  # the whole header block, padding included
        for bit in range(8):
            bad = bytearray(value)
            bad[byte] ^= 1 << bit
            with pytest.raises(CorruptValue):
                codec.decode(bytes(bad), key=key)


def test_values_of_the_previous_format_are_never_read() -> None:
    # A version-1 value: magic, version 1, width, count, CRC of the blocks, padded to a block.
    import struct
    import zlib

    ids = np.arange(16, dtype=np.uint32)
    body = codec.encode(ids, key=KEY, width=16)[16:]
    header = struct.pack("<2sBBII", b"TK", 1, 16, 16, zlib.crc32(body, zlib.crc32(KEY))).ljust(16, b"\0")
    old = header + body
    with pytest.raises(CorruptValue):
        codec.decode(old, key=KEY)

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

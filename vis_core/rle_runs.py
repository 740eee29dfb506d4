"""Decoding many COCO compressed RLE counts strings at once, with numpy.

pycocotools' C decoder trusts its input: a counts string whose runs do not add up to H*W
gives wrong areas and IoUs without any error, and it never hands the runs back to Python.
Here all strings of a batch are decoded together (the ~10^5 masks of a YouTube-VIS result
file in well under a second); the runs serve to check them (`vis_core.masks`), to measure
areas and to build the evaluator's track volumes.

The counts alphabet (as in pycocotools' `rleFrString`): each character is 48 + a 6-bit
group; bit 0x20 says "more groups follow", the low 5 bits are the payload (least
significant group first), and bit 0x10 of a number's last group is its sign. From the
fourth number on, each value is a difference to the run two places earlier. Runs
alternate background / foreground, starting with background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# A valid difference of two runs below 2**32 fits in 33 signed bits: 7 groups of 5 bits.
_MAX_GROUPS = 7
RUN_LIMIT = 1 << 32  # pycocotools stores runs as uint32
# Characters per numpy pass: bounds the temporary arrays to some tens of MB.
_CHUNK_CHARS = 1 << 22
# The value of a one-character number per 6-bit group: payload, minus 32 when signed.
_ONE_CHARACTER_VALUE = np.array([(g & 0x1F) - (32 if g & 0x10 else 0) for g in range(64)], np.int64)


@dataclass(frozen=True, eq=False)
class DecodedCounts:
    """Runs of N counts strings, string after string.

    runs: `[R]` int64 run lengths; string i owns `runs[offsets[i]:offsets[i + 1]]`.
    offsets: `[N + 1]` int64.
    pixel_totals: `[N]` int64 sum of each string's runs (H*W for a valid mask).
    areas: `[N]` int64 foreground pixels (odd runs) of each string, pycocotools' `area`.
    malformed: `[N]` bool: a character outside the alphabet, a number cut short or too
        long, or a run outside [0, 2**32). The pixel total is checked by the caller.
    """

    runs: np.ndarray
    offsets: np.ndarray
    pixel_totals: np.ndarray
    areas: np.ndarray
    malformed: np.ndarray


def decode_counts(counts: Sequence[bytes]) -> DecodedCounts:
    """Decode N compressed counts strings (bytes)."""
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=len(counts))
    ends = np.cumsum(lengths)
    # Chunks of about _CHUNK_CHARS characters (at least one string each).
    cuts = np.searchsorted(
        ends, np.arange(_CHUNK_CHARS, ends[-1] if ends.size else 0, _CHUNK_CHARS)
    )
    bounds = np.unique(np.concatenate(([0], cuts + 1, [len(counts)])).clip(0, len(counts)))
    pieces = [
        _decode_chunk(counts[start:stop], lengths[start:stop])
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    ] or [_decode_chunk([], lengths)]
    runs = np.concatenate([piece[0] for piece in pieces])
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.concatenate([piece[1] for piece in pieces]), out=offsets[1:])
    pixel_totals, areas = _totals_and_areas(runs, offsets)
    return DecodedCounts(
        runs=runs,
        offsets=offsets,
        pixel_totals=pixel_totals,
        areas=areas,
        malformed=np.concatenate([piece[2] for piece in pieces]),
    )


def _totals_and_areas(runs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per string `[N]`: the sum of its runs, and of its foreground (odd position) runs."""
    # Running sums over the runs at even and at odd global indices: even_sums[k] adds the
    # first k runs at even indices, so the runs of [a, b) at even indices sum to
    # even_sums[(b + 1) // 2] - even_sums[(a + 1) // 2]; likewise odd_sums with k // 2.
    even_sums = np.zeros((runs.size + 1) // 2 + 1, dtype=np.int64)
    np.cumsum(runs[0::2], out=even_sums[1:])
    odd_sums = np.zeros(runs.size // 2 + 1, dtype=np.int64)
    np.cumsum(runs[1::2], out=odd_sums[1:])
    start, stop = offsets[:-1], offsets[1:]
    even = even_sums[(stop + 1) // 2] - even_sums[(start + 1) // 2]
    odd = odd_sums[stop // 2] - odd_sums[start // 2]
    # A string's foreground runs are those of the parity opposite to its first run.
    return even + odd, np.where(start % 2 == 0, odd, even)


def _decode_chunk(
    counts: Sequence[bytes], lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs `[R]`, runs per string `[n]` and malformed flags `[n]` of a chunk."""
    n = len(counts)
    malformed = np.zeros(n, dtype=bool)
    if lengths.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(n, np.int64), malformed
    groups = np.frombuffer(b"".join(counts), dtype=np.uint8) - np.uint8(48)  # wraps below 48
    string_end = np.cumsum(lengths)  # exclusive
    bad = np.flatnonzero(groups > 63)
    if bad.size:
        malformed[np.searchsorted(string_end, bad, side="right")] = True
        groups[bad] = 0
    nonempty = np.flatnonzero(lengths)
    last_char = string_end[nonempty] - 1
    ends_number = (groups & 0x20) == 0
    malformed[nonempty[~ends_number[last_char]]] = True  # the string ends inside a number
    ends_number[last_char] = True  # so that no number spans two strings

    number_end = np.flatnonzero(ends_number)  # [M]
    # Most numbers are one character: read them, sign included, from a table. A number
    # is longer when the character before its end asks for more.
    values = _ONE_CHARACTER_VALUE[groups[number_end]]
    longer = np.flatnonzero(~ends_number[number_end[1:] - 1]) + 1
    if number_end[0] > 0:
        longer = np.append(0, longer)
    long_start = np.where(longer > 0, number_end[longer - 1] + 1, 0)
    long_count = number_end[longer] - long_start + 1
    if longer.size:
        values[longer] = _several_character_values(groups, long_start, long_count)

    # Each non-empty string's last character closes its last number.
    closing = np.searchsorted(number_end, last_char)  # [n'] last number of each string
    per_string = np.diff(closing, prepend=-1)  # numbers of each non-empty string
    first = closing - per_string + 1
    too_long = longer[long_count > _MAX_GROUPS]
    if too_long.size:
        malformed[nonempty[np.searchsorted(closing, too_long)]] = True
    _undo_differences(values, first, per_string)
    out_of_range = np.flatnonzero(values.view(np.uint64) >= RUN_LIMIT)  # negatives wrap
    if out_of_range.size:
        malformed[nonempty[np.searchsorted(closing, out_of_range)]] = True
    runs_per_string = np.zeros(n, dtype=np.int64)
    runs_per_string[nonempty] = per_string
    return values, runs_per_string, malformed


def _several_character_values(
    groups: np.ndarray, starts: np.ndarray, group_count: np.ndarray
) -> np.ndarray:
    """Values `[L]` of numbers spanning several characters (payload least significant first)."""
    values = np.zeros(starts.size, dtype=np.int64)
    active = np.arange(starts.size)
    for k in range(_MAX_GROUPS):
        payload = (groups[starts[active] + k] & 0x1F).astype(np.int64)
        values[active] |= payload << (5 * k)
        active = active[group_count[active] > k + 1]
        if active.size == 0:
            break
    used = np.minimum(group_count, _MAX_GROUPS)
    last = groups[starts + used - 1]
    negative = (last & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * used[negative])
    return values


def _undo_differences(values: np.ndarray, first: np.ndarray, per_string: np.ndarray) -> None:
    """In place: run[i] = value[i] + run[i - 2] from the fourth number of each string on.

    values: `[M]` numbers of all strings; first, per_string: `[S]` where each string's
    numbers start and how many there are.
    """
    # Within a string the recurrence is a running sum over every other number. Numbers of
    # one global parity form a stream in which each string is a contiguous segment; the
    # string's first number (its own run) is a segment alone.
    stop = first + per_string
    for parity in (0, 1):
        stream = values[parity::2]  # a view: writing it writes `values`
        if stream.size == 0:
            continue
        head = first + ((first & 1) != parity)  # first number of each string in the stream
        own = first[(first & 1) == parity]  # a string's number 0 stands alone
        starts = np.union1d(
            (head[head < stop] - parity) // 2, np.append((own - parity) // 2 + 1, 0)
        )
        starts = starts[starts < stream.size]
        totals = np.cumsum(stream)
        base = totals[starts] - stream[starts]  # sum before each segment
        stream[:] = totals - np.repeat(base, np.diff(starts, append=stream.size))

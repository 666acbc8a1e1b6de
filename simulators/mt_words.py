"""A ``random.Random``'s own draws, made in bulk by numpy: the same Mersenne Twister, word for word.

Why: a simulator that draws noise for 75 frames a second spends most of its time calling
``random.random`` and ``random.gauss`` one value at a time. CPython's ``random.Random`` is the
reference MT19937 (``genrand_uint32``), and numpy's ``MT19937`` bit generator is the same
generator with the same state layout (624 words and a position), so the state can be handed
across and numpy can produce the next words in one call. From the words, the values are built
as CPython builds them: ``random()`` from two words (``(a >> 5) * 2**26 + (b >> 6)) / 2**53``,
exact in binary floating point) and ``getrandbits(k)`` for k <= 32 from one (``word >> (32 - k)``).
Nothing else is assumed: the state goes back into the ``random.Random`` when the caller is done,
so code drawing one value at a time can continue exactly where the bulk draws stopped.
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt

__all__ = ["WordStream", "doubles"]

_STATE_WORDS = 624  # MT19937 state size; CPython's getstate appends the position
_TO_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53


class WordStream:
    """The 32-bit outputs a ``random.Random`` would produce next, drawn by numpy's MT19937."""

    def __init__(self) -> None:
        self._bits = np.random.MT19937(0)  # its state is always set from a random.Random (load)

    def load(self, rng: random.Random) -> None:
        """Continue from ``rng``'s state: the next word is the one ``rng`` would draw next."""
        version, internal, _ = rng.getstate()
        if version != 3 or len(internal) != _STATE_WORDS + 1:
            raise ValueError(f"unexpected random.Random state (version {version}, {len(internal)} words)")
        self._bits.state = {
            "bit_generator": "MT19937",
            "state": {
                "key": np.array(internal[:_STATE_WORDS], dtype=np.uint32),
                "pos": internal[_STATE_WORDS],
            },
        }

    def words(self, count: int) -> npt.NDArray[np.uint64]:
        """The next ``count`` words (as ``genrand_uint32`` returns them)."""
        return self._bits.random_raw(count)

    def word(self) -> int:
        """The next word, as a Python int (for draws whose count depends on the values)."""
        return int(self._bits.random_raw())

    def hand_back(self, rng: random.Random, gauss_next: float | None) -> None:
        """Put the stream's position into ``rng``: its next draw is the word after the last taken."""
        state = self._bits.state["state"]
        key: list[int] = state["key"].tolist()
        rng.setstate((3, (*key, int(state["pos"])), gauss_next))


def doubles(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """``random.random()`` values from consecutive word pairs (``len(words)`` must be even)."""
    a = (words[0::2] >> 5).astype(np.float64)
    b = (words[1::2] >> 6).astype(np.float64)
    return (a * 67108864.0 + b) * _TO_DOUBLE

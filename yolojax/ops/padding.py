"""Static shapes for variable counts: a count is padded up to one of a few sizes, so each size compiles once."""
from __future__ import annotations


def padded_size(n: int, minimum: int = 1) -> int:
    """The next power of two >= n (and >= `minimum`): a few compilations serve every count."""
    return max(int(minimum), 1 << (max(int(n), 1) - 1).bit_length())

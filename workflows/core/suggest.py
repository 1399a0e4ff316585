"""Did-you-mean hints for misspelt keys and names (difflib's similarity ratio), and counted nouns."""
from __future__ import annotations

import difflib


def did_you_mean(word, options, cutoff: float = 0.75) -> str:
    """' (did you mean 'x'?)' for the closest option, or '' when none is close or `word` is not
    a string."""
    if not isinstance(word, str):
        return ""
    options = [o for o in options if isinstance(o, str)]
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    if not close:       # a case slip (Adam, SGD) is always close
        close = [o for o in options if o.lower() == word.lower()][:1]
    return f" (did you mean {close[0]!r}?)" if close and close[0] != word else ""


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """The noun for a count: 1 cell, 2 cells (0 cells)."""
    return noun if n == 1 else nouns or noun + "s"


def count(n: int, noun: str, nouns: str | None = None) -> str:
    """'1 cell', '3 cells'."""
    return f"{n} {plural(n, noun, nouns)}"

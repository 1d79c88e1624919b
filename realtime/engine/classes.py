"""The 1000 ImageNet class names, and a forgiving lookup by name or index."""

from __future__ import annotations

import difflib
import functools
import math
import re


class ClassLookupError(ValueError):
    """A class query matched nothing; the message lists close names."""


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order.

    They ship inside torchvision's weight metadata, so no download is needed.
    """
    from torchvision.models import GoogLeNet_Weights

    return tuple(GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"])


def _norm(text: str) -> str:
    """Lower case, with '_', '-' and runs of spaces folded to one space."""
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


# Words for a kind of thing whose classes do not all carry the word ("black widow", "tarantula"
# are spiders; "tabby", "lion" cats): ImageNet-1k's classes are ordered by WordNet, so each kind
# is a few runs of indices (first, last), inclusive.
FAMILIES: dict[str, tuple[tuple[int, int], ...]] = {
    "spider": ((72, 77),),
    "dog": ((151, 268),),
    "cat": ((281, 293),),  # domestic cats, then the big cats
    "bird": ((7, 24), (80, 100), (127, 146)),
    "snake": ((52, 68),),
    "fish": ((0, 6), (389, 397)),
    "ape": ((365, 369),),
    "monkey": ((370, 382),),
    "butterfly": ((321, 326),),
    "beetle": ((300, 306),),
}


def family(query: str, close: bool = False) -> list[int]:
    """The classes of a kind named by `query` ("spider", "spiders", "butterflies"), or [].

    Args:
        close: also take a word spelt close to a kind ("spidr"), for suggestions.
    """
    q = _norm(query)
    kind = next((w for w in _forms(q) if w in FAMILIES), None)
    if kind is None and close:
        kind = next(iter(difflib.get_close_matches(q, FAMILIES, n=1, cutoff=0.8)), None)
    if kind is None:
        return []
    return [i for first, last in FAMILIES[kind] for i in range(first, last + 1)]


def _forms(q: str) -> set[str]:
    """A normalised word and its singulars: "butterflies" -> butterfly, "fishes" -> fish."""
    forms = {q}
    if q.endswith("s"):
        forms.add(q[:-1])
    if q.endswith("es"):
        forms.add(q[:-2])
    if q.endswith("ies"):
        forms.add(q[:-3] + "y")
    return {f for f in forms if f == q or len(f) >= 3}  # "s" is no word to look for


def search(query: str, limit: int = 10) -> list[tuple[int, str]]:
    """Classes matching a query, best first.

    Order: exact name, then the classes of a kind the query names (FAMILIES: "spider" gives
    "black widow" and "tarantula"), then names that start with the query, then names that
    contain it as whole words, then as a substring. Only when none of these match (a
    misspelling): close spellings, and the kind spelt close to it.

    Args:
        query: free text such as "spider", "Spider Web", "espresso".
        limit: at most this many results.

    Returns:
        (index, name) pairs; empty when nothing is close.
    """
    names = class_names()
    q = _norm(query)
    if not q:
        return [(i, n) for i, n in enumerate(names)][:limit]
    normed = _normed_names()
    word = re.compile(rf"\b{re.escape(q)}\b")
    tiers: list[list[int]] = [[], family(q), [], [], []]
    for i, n in enumerate(normed):
        if n == q:
            tiers[0].append(i)
        elif n.startswith(q):
            tiers[2].append(i)
        elif word.search(n):
            tiers[3].append(i)
        elif q in n:
            tiers[4].append(i)
    ranked = list(dict.fromkeys(i for tier in tiers for i in tier))  # first place kept
    if not ranked:  # nothing contains it: a misspelling; suggest what it is spelt close to
        ranked = family(q, close=True)
        for close in difflib.get_close_matches(q, normed, n=limit, cutoff=0.6):
            i = normed.index(close)
            if i not in ranked:
                ranked.append(i)
    return [(i, names[i]) for i in ranked[:limit]]


@functools.lru_cache(maxsize=1)
def _normed_names() -> list[str]:
    return [_norm(n) for n in class_names()]


# The longest class name has 30 characters; a longer query names no class, and the search's
# cost grows with the query, so one is refused before searching.
MAX_QUERY = 100
# Recent name lookups, found or refused: a name sent again (an OSC fader, a flood) costs a dict
# lookup instead of a search through a thousand names (~5-25 ms).
_LOOKUPS = 1024

# A misspelling is taken for a name only this alike (difflib's ratio): "volcanoe" -> volcano
# (0.93), "jelly fish" -> jellyfish (0.95); "spidr" is no closer than 0.67 to anything, and is
# refused rather than silently becoming "spindle".
CLOSE_ENOUGH = 0.85


def _names_it(query: str, name: str) -> bool:
    """Whether `query` names `name`: the whole name, its start, a whole word or a part of it, or
    a spelling at least CLOSE_ENOUGH to it."""
    q, n = _norm(query), _norm(name)
    if q and any(form in n for form in _forms(q)):
        return True
    return difflib.SequenceMatcher(None, q, n).ratio() >= CLOSE_ENOUGH


def resolve_class(query: str | int | float) -> int:
    """One class index from a name or an index.

    A number (or a numeric string, as OSC senders often send) is taken as an
    index; a name takes the best match from `search`.

    Raises:
        ClassLookupError: the index is out of range or no name is close; the
            message says what is valid and suggests near names.
    """
    names = class_names()
    if isinstance(query, str):
        text = query.strip()
        try:
            query = float(text)
        except ValueError:
            if len(text) > MAX_QUERY:  # never searched, never cached
                raise ClassLookupError(
                    f"unknown ImageNet class {text[:40]!r}... ({len(text)} characters; class "
                    f"names are shorter); try `python installation.py classes WORD` to search"
                ) from None
            found = _lookup_name(text)
            if isinstance(found, str):
                raise ClassLookupError(found) from None
            return found
    if (
        not math.isfinite(query) or int(query) != query or not 0 <= int(query) < len(names)
    ):  # NaN or infinite, fraction, range
        raise ClassLookupError(
            f"expected an ImageNet class index 0-{len(names) - 1} or a class name, got {query!r}"
        )
    return int(query)


@functools.lru_cache(maxsize=_LOOKUPS)
def _lookup_name(text: str) -> int | str:
    """The class a name means, or the refusal's message (cached either way)."""
    hits = search(text, limit=len(class_names()))
    for index, name in hits:  # the first the query names: "spider" -> a spider, not a "pier"
        if _names_it(text, name):
            return index
    hits = hits[:5]
    nearest = f"; nearest: {', '.join(n for _, n in hits)}" if hits else ""
    return (
        f"unknown ImageNet class {text!r}{nearest}; try `python installation.py classes "
        f"{text.split()[0] if text.split() else ''}` to search, or give an index 0-999"
    )

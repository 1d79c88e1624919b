"""ImageNet class lookup by name and index."""

import pytest

from realtime.engine.classes import ClassLookupError, class_names, resolve_class, search


def test_there_are_a_thousand_names():
    names = class_names()
    assert len(names) == 1000
    assert names[0] == "tench"


@pytest.mark.parametrize(
    "query,expected",
    [
        ("spider web", "spider web"),
        ("Spider_Web", "spider web"),
        ("volcano", "volcano"),
        ("pizza", "pizza"),
        ("espresso", "espresso"),
        ("jelly fish", "jellyfish"),  # close spelling
    ],
)
def test_forgiving_names(query, expected):
    assert class_names()[resolve_class(query)] == expected


def test_search_ranks_exact_then_prefix_then_words():
    names = [n for _, n in search("spider", limit=10)]
    assert "black widow" not in names[:1]
    assert any("spider" in n for n in names[:3])


def test_indices_and_numeric_strings():
    assert resolve_class(980) == 980
    assert resolve_class("980") == 980
    assert resolve_class(3.0) == 3


@pytest.mark.parametrize("bad", [1000, -1, 2.5, "zzqqxx"])
def test_bad_queries_say_what_is_valid(bad):
    with pytest.raises(ClassLookupError, match="0-999|classes"):
        resolve_class(bad)


@pytest.mark.parametrize("close,expected", [("volcanoe", "volcano"), ("jellyfsh", "jellyfish")])
def test_a_close_misspelling_is_taken(close, expected):
    assert class_names()[resolve_class(close)] == expected


def test_a_misspelling_that_is_not_close_is_refused_with_the_nearest_names():
    with pytest.raises(ClassLookupError) as err:
        resolve_class("spidr")  # must not silently become "spindle"
    message = str(err.value)
    assert "unknown ImageNet class 'spidr'; nearest: " in message and "spindle" in message

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


def test_search_for_a_kind_shows_that_kind_and_nothing_spelt_alike():
    names = [n for _, n in search("spider", limit=20)]
    assert names[:6] == [
        "black and gold garden spider", "barn spider", "garden spider", "black widow",
        "tarantula", "wolf spider",
    ]  # fmt: skip
    assert "spider web" in names
    assert not {"pier", "spindle", "slide rule"} & set(names)
    assert {"tabby", "lion", "cheetah"} <= {n for _, n in search("cats", limit=20)}
    assert {"monarch", "cabbage butterfly"} <= {n for _, n in search("butterflies", limit=20)}
    assert [n for _, n in search("spider web", limit=3)][0] == "spider web"  # exact name first


def test_a_kind_as_a_target_is_one_of_that_kind():
    assert class_names()[resolve_class("spider")] in {n for _, n in search("spider")[:6]}
    assert class_names()[resolve_class("butterflies")] == "cabbage butterfly"


def test_every_kind_names_real_classes():
    from realtime.engine.classes import FAMILIES, family

    names = class_names()
    assert [names[i] for i in family("spider")][-1] == "wolf spider"
    assert names[family("dog")[0]] == "Chihuahua" and names[family("dog")[-1]] == "Mexican hairless"
    assert names[family("cat")[0]] == "tabby" and names[family("cat")[-1]] == "cheetah"
    for kind in FAMILIES:
        assert 0 < len(family(kind)) == len(set(family(kind)))


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
    assert "unknown ImageNet class 'spidr'; nearest: " in message and "black widow" in message

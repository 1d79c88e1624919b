"""The audience queue: dwell and cross-fade, merging, the operator's setting back, lists, limits."""

import pytest

from realtime.control.audience import AudienceError, AudienceQueue, Refused
from realtime.control.params import LiveParams
from realtime.engine.classes import resolve_class
from realtime.knobs import AudienceConfig

VOLCANO, PIZZA, JELLYFISH = (resolve_class(n) for n in ("volcano", "pizza", "jellyfish"))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def params(clock):
    return LiveParams(["a", "b", "c"], ["m"], "m", {"glide": 1.0, "target": "jellyfish"}, clock)


def make(params, clock, **kw):
    kw.setdefault("dwell", 10.0)
    kw.setdefault("per_client", 0.0)
    return AudienceQueue(AudienceConfig(**kw), params, clock)


def test_each_request_is_dreamed_for_dwell_then_the_next_fades_in_then_the_operators(params, clock):
    queue = make(params, clock)
    queue.ask("10.0.0.1", "volcano")
    queue.ask("10.0.0.2", "Pizza ")
    assert queue.tick().index == VOLCANO
    assert params.snapshot().target == VOLCANO
    clock.t += 0.5  # half a glide: the operator's jellyfish and the volcano share the dream
    weights = dict(params.snapshot().targets)
    assert 0.0 < weights[VOLCANO] < 1.0 and 0.0 < weights[JELLYFISH] < 1.0
    clock.t += 9.0
    assert queue.tick().index == VOLCANO  # 9.5 s of 10
    clock.t += 0.5
    assert queue.tick().index == PIZZA
    clock.t += 1.0
    assert params.snapshot().targets == ((PIZZA, 1.0),)
    clock.t += 10.0
    assert queue.tick() is None  # nothing waits: the operator's own target comes back
    clock.t += 1.0
    assert params.snapshot().targets == ((JELLYFISH, 1.0),)
    assert params.state()["target"] == "jellyfish"  # never overwritten


def test_the_operator_may_change_their_target_while_a_visitor_is_dreamed(params, clock):
    queue = make(params, clock)
    queue.ask("10.0.0.1", "volcano")
    queue.tick()
    params.set("target", "none")
    assert params.snapshot().target == VOLCANO  # the visitor's still leads
    clock.t += 11.0
    queue.tick()
    clock.t += 1.0
    snap = params.snapshot()
    assert snap.target is None and snap.targets == () and snap.layer_weight == 1.0


def test_the_same_class_twice_in_a_row_is_merged(params, clock):
    queue = make(params, clock)
    first = queue.ask("10.0.0.1", "volcano")
    again = queue.ask("10.0.0.2", "volcanoe")  # a close spelling is the same class
    assert again is first and first.asks == 2
    queue.ask("10.0.0.3", "pizza")
    queue.ask("10.0.0.4", "volcano")  # not in a row: a request of its own
    assert queue.view()["queue"] == ["volcano", "pizza", "volcano"]
    queue.tick()
    assert queue.ask("10.0.0.5", "pizza").asks == 1  # the last waiting one is volcano


def test_refusals_say_what_to_do(params, clock):
    queue = make(params, clock, per_client=30.0, queue_max=2, block=("tarantula",))
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.1", "tarantula")
    assert err.value.status == 403 and "tarantula is not one of the things" in str(err.value)
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.1", "xqzzyv")
    assert err.value.status == 422 and "unknown ImageNet class 'xqzzyv'" in str(err.value)
    assert "installation.py" not in str(err.value)  # no command line for visitors
    queue.ask("10.0.0.1", "volcano")
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.1", "pizza")
    assert err.value.status == 429 and "try again in 30 s" in str(err.value)
    clock.t += 30.0
    queue.ask("10.0.0.1", "pizza")
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.2", "jellyfish")
    assert err.value.status == 429 and "queue is full (2 waiting)" in str(err.value)
    assert queue.refused == 4 and queue.accepted == 2
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.3", "x" * 101)
    assert err.value.status == 400


def test_an_allow_list_admits_only_its_classes(params, clock):
    queue = make(params, clock, allow=("volcano", "pizza"))
    queue.ask("10.0.0.1", "pizza")
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.2", "jellyfish")
    assert err.value.status == 403


def test_list_entries_that_are_no_class_are_refused_at_start_with_the_nearest(params, clock):
    with pytest.raises(AudienceError) as err:
        make(params, clock, block=("volcano", "spidr"))
    assert "audience.block" in str(err.value) and "nearest:" in str(err.value)
    with pytest.raises(AudienceError, match="audience.allow"):
        make(params, clock, allow=("qqqqqqqq",))


def test_operator_clears_skips_and_switches_off(params, clock):
    queue = make(params, clock)
    for i, name in enumerate(("volcano", "pizza", "jellyfish")):
        queue.ask(f"10.0.0.{i}", name)
    queue.tick()
    queue.skip()
    assert queue.tick().index == PIZZA
    assert queue.clear() == 1
    assert queue.view()["queue"] == [] and queue.view()["now"]["name"] == "pizza"
    queue.set_enabled(False)
    assert queue.tick() is None
    assert params.snapshot().target == JELLYFISH
    with pytest.raises(Refused) as err:
        queue.ask("10.0.0.9", "volcano")
    assert err.value.status == 503 and "paused" in str(err.value)
    queue.set_enabled(True)
    queue.ask("10.0.0.9", "volcano")

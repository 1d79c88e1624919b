"""The judge: a second ImageNet network reads classes at a quarter size; class targets pass it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime.app.judge import class_probability, load_judge, probabilities, quarter
from realtime.app.look_bench import LIVE_JUDGED, live_probability
from realtime.engine import objectives
from realtime.engine.step import Dreamer
from realtime.engine.strategy import make_dreamer
from realtime.knobs import DreamConfig
from realtime.live.transfer import to_image, to_tensor


@pytest.fixture(scope="module")
def judge():
    return load_judge()


def test_the_judge_is_another_network_that_classifies_right_at_a_quarter_size(
    judge, chelsea_rgb, coffee_rgb, lite0
):
    assert judge.variant == "lite2" and len(judge._blocks) == 21  # not the Lite0 that dreams
    assert quarter(chelsea_rgb).shape == (150, 225, 3)
    assert int(probabilities(judge, chelsea_rgb).argmax()) in range(281, 286)  # a cat
    assert int(probabilities(judge, coffee_rgb).argmax()) == 967  # espresso


def test_a_class_target_raises_that_class_for_the_judge_too(judge, lite0):
    """Dreamed by Lite0 with the class recipe, goldfish is what Lite2 sees, at a quarter size."""
    import skimage.data

    image = skimage.data.astronaut()[::2, ::2]  # 256x256, the size Lite0 sees objects at
    goldfish = 1
    before = class_probability(judge, image, goldfish)
    cfg = DreamConfig(
        steps=12, octaves=3, octave_scale=1.5, step_size=0.04, jitter=8, grad_norm="fourier",
        fourier_decay=1.0, color=True, views=3, view_zoom=0.3, view_turn=10.0, min_size=64,
    )  # fmt: skip
    torch.manual_seed(0)
    dreamer = make_dreamer(lite0, "cpu")
    out = dreamer.dream(
        to_tensor(image, torch.device("cpu")),
        objectives.class_logit(goldfish),
        cfg,
        torch.Generator().manual_seed(0),
    )
    after = class_probability(judge, to_image(out), goldfish)
    assert before < 0.01 and after > 0.3, (before, after)
    plain = DreamConfig(
        steps=12, octaves=3, octave_scale=1.5, step_size=0.04, jitter=8, min_size=64
    )
    texture = Dreamer(lite0).dream(
        to_tensor(image, torch.device("cpu")),
        objectives.class_logit(goldfish),
        plain,
        torch.Generator().manual_seed(0),
    )
    small = np.asarray(to_image(texture))
    assert class_probability(judge, small, goldfish) < after  # the old step: texture, not a fish


def test_the_live_look_is_judged_over_its_last_frames_not_one(judge, chelsea_rgb, coffee_rgb):
    cat = int(probabilities(judge, chelsea_rgb).argmax())
    p_cat = class_probability(judge, chelsea_rgb, cat)
    # the last frame alone would say "no cat"; the window still sees one in 19 frames of 20
    window = [chelsea_rgb] * (LIVE_JUDGED - 1) + [coffee_rgb]
    assert live_probability(judge, window, cat) > 0.8 * p_cat
    # frames before the window do not count
    late = [chelsea_rgb] * 30 + [coffee_rgb] * LIVE_JUDGED
    assert live_probability(judge, late, cat) == pytest.approx(
        class_probability(judge, coffee_rgb, cat)
    )

"""The pure parts of benchmarks/gpu_estimates.py: the TTA cost and the meta-device counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from torch import nn

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_estimates


def test_tta_cost_is_flips_times_sum_of_squared_scales():
    # The presets' scales: 2 × (1 + 0.25 + 2.25 + 4) = 15 image-sized forwards.
    assert gpu_estimates.tta_cost([1.0, 0.5, 1.5, 2.0]) == pytest.approx(15.0)
    assert gpu_estimates.tta_cost([1.0, 0.5, 1.5, 2.0], flip=False) == pytest.approx(7.5)
    assert gpu_estimates.tta_cost([1.0]) == pytest.approx(2.0)


@pytest.mark.parametrize("scales", [[], [1.0, 0.0], [-1.0]])
def test_tta_cost_refuses_empty_or_non_positive_scales(scales):
    with pytest.raises(ValueError):
        gpu_estimates.tta_cost(scales)


def test_meta_counts_match_a_hand_computed_convolution(monkeypatch):
    # One 3→4 3×3 convolution (padding 1, no bias) then ReLU on 8×8 inputs: per output pixel
    # 4 × 3 × 9 multiply-adds = 108 → 216 FLOPs per input pixel forward; the backward adds the
    # weight gradient (216) but no input gradient (the input needs none). Saved: the conv's
    # input (3 values per pixel) and the ReLU's output (4), not the weight: 4 bytes each in
    # float32, 2 in bfloat16.
    def tiny(**_: object) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU())

    monkeypatch.setattr(gpu_estimates, "create_model", lambda kind, **kw: tiny(**kw))
    cost = gpu_estimates.measure_model("tiny", crop=8, batch=2)
    assert cost.params == cost.trainable == 4 * 3 * 9
    assert cost.fwd_flops_per_px == pytest.approx(216)
    assert cost.step_flops_per_px == pytest.approx(2 * 216)
    assert cost.saved_bytes_per_px == pytest.approx((3 + 4) * 4)
    assert cost.saved_bytes_per_px_bf16 == pytest.approx((3 + 4) * 2)

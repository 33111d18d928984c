"""Advantage estimators against values worked out by hand.

The shared 2x3 example (every sample valid):
    group A rewards [0, 1, 2]: mean 1, deviations [-1, 0, 1], unbiased var (1+0+1)/2 = 1, biased var 2/3
    group B rewards [1, 1, 4]: mean 2, deviations [-1, -1, 2], unbiased var (1+1+4)/2 = 3
"""

from __future__ import annotations

import math

import pytest
import torch

from aha.algo.advantages import ADVANTAGES, grpo_advantages, reinforce_pp_advantages, rloo_advantages
from aha.errors import AhaError

R = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 4.0]], dtype=torch.float64)
ALL = torch.ones(2, 3, dtype=torch.bool)
S3 = math.sqrt(3.0)

# batch over all six rewards [0,1,2,1,1,4]: mean 1.5, squared deviations sum 9.5, unbiased var 1.9
RPP = [[-1.5, -0.5, 0.5], [-0.5, -0.5, 2.5]]
# centred by group first: [-1,0,1,-1,-1,2], mean 0, squares sum 8, unbiased var 1.6
RPPB = [[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]

HAND = [
    # GRPO: deviation / unbiased group std (A: std 1, B: std sqrt 3)
    ("grpo", {"eps": 0.0}, [[-1.0, 0.0, 1.0], [-1 / S3, -1 / S3, 2 / S3]]),
    # GRPO with the biased std (divide by n): A std sqrt(2/3), B std sqrt(2)
    ("grpo", {"eps": 0.0, "unbiased_std": False},
     [[-1 / math.sqrt(2 / 3), 0.0, 1 / math.sqrt(2 / 3)], [-1 / math.sqrt(2), -1 / math.sqrt(2), 2 / math.sqrt(2)]]),
    # GRPO, batch std: unbiased std of all six rewards = sqrt(1.9)
    ("grpo", {"eps": 0.0, "scale": "batch"},
     [[-1 / math.sqrt(1.9), 0.0, 1 / math.sqrt(1.9)], [-1 / math.sqrt(1.9), -1 / math.sqrt(1.9), 2 / math.sqrt(1.9)]]),
    # GRPO without std = Dr. GRPO
    ("grpo", {"scale": "none"}, [[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]),
    ("dr_grpo", {}, [[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]),
    # RLOO: r_i - mean of the other two; e.g. B: 1 - (1+4)/2 = -1.5, 4 - (1+1)/2 = 3
    ("rloo", {}, [[-1.5, 0.0, 1.5], [-1.5, -1.5, 3.0]]),
    # REINFORCE++: (r - 1.5) / sqrt(1.9)
    ("reinforce_pp", {"eps": 0.0}, [[v / math.sqrt(1.9) for v in row] for row in RPP]),
    # REINFORCE++-baseline: group-centred, then / sqrt(1.6)
    ("reinforce_pp", {"eps": 0.0, "group_baseline": True}, [[v / math.sqrt(1.6) for v in row] for row in RPPB]),
    ("reinforce_pp_baseline", {"eps": 0.0}, [[v / math.sqrt(1.6) for v in row] for row in RPPB]),
]


@pytest.mark.parametrize("name,options,expected", HAND, ids=[f"{h[0]}-{i}" for i, h in enumerate(HAND)])
def test_hand_computed_2x3(name, options, expected):
    adv = ADVANTAGES.get(name)(R, ALL, **options)
    assert adv.shape == (2, 3) and adv.dtype == torch.float64
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_default_eps_is_small():
    # with eps 1e-6 (verl's) group A's advantages are 1 / (1 + 1e-6)
    adv = grpo_advantages(R, ALL)
    assert adv[0, 2].item() == pytest.approx(1 / (1 + 1e-6), abs=1e-12)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
@pytest.mark.parametrize("rewards", [
    [[1.0, 1.0, 1.0]],          # all correct
    [[0.0, 0.0, 0.0]],          # all wrong
    [[0.1, 0.1, 0.1]],          # equal, but 0.1 is not exact in binary: round-off must not leak
    [[-2.5, -2.5, -2.5]],       # equal negative rewards
])
def test_equal_rewards_give_exactly_zero(name, rewards):
    r = torch.tensor(rewards)
    adv = ADVANTAGES.get(name)(r, torch.ones_like(r, dtype=torch.bool))
    assert torch.equal(adv, torch.zeros_like(r))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
def test_masked_entries_are_zero_and_ignored(name):
    # row 0: the masked 100 must not move the statistics of [0, 1, 2] (compare with an unmasked copy)
    r = torch.tensor([[0.0, 1.0, 2.0, 100.0], [1.0, 1.0, 4.0, -7.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool)
    fn = ADVANTAGES.get(name)
    adv = fn(r, m)
    assert adv[0, 3] == 0 and adv[1, 3] == 0
    torch.testing.assert_close(adv[:, :3], fn(R, ALL), rtol=0, atol=1e-12)


def test_equal_valid_rewards_with_masked_outlier():
    # valid rewards of row 1 are [3, 3]: zero advantage although the masked 5 differs
    r = torch.tensor([[0.0, 1.0, 2.0], [5.0, 3.0, 3.0]])
    m = torch.tensor([[1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    for name in ("grpo", "dr_grpo", "rloo"):
        assert torch.equal(ADVANTAGES.get(name)(r, m)[1], torch.zeros(3))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"])
def test_single_valid_sample_gets_zero(name):
    r = torch.tensor([[7.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    adv = ADVANTAGES.get(name)(r, m)
    assert torch.equal(adv[0], torch.zeros(3))
    assert adv[1, 1] > 0


def test_group_relative_advantages_sum_to_zero():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(5, 8, generator=g, dtype=torch.float64)
    m = torch.ones(5, 8, dtype=torch.bool)
    for name in ("grpo", "dr_grpo", "rloo"):
        torch.testing.assert_close(ADVANTAGES.get(name)(r, m).sum(dim=1), torch.zeros(5, dtype=torch.float64),
                                   rtol=0, atol=1e-12)


def test_rloo_equals_leave_one_out_loop():
    # the closed form n/(n-1) (r - mean) against the definition, with a ragged mask
    g = torch.Generator().manual_seed(1)
    r = torch.randn(4, 5, generator=g, dtype=torch.float64)
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0], [1, 1, 0, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    adv = rloo_advantages(r, m)
    for p in range(4):
        idx = [j for j in range(5) if m[p, j]]
        for i in idx:
            others = [r[p, j].item() for j in idx if j != i]
            assert adv[p, i].item() == pytest.approx(r[p, i].item() - sum(others) / len(others), abs=1e-12)


def test_rloo_normalize_whitens_batch():
    g = torch.Generator().manual_seed(2)
    r = torch.rand(3, 4, generator=g, dtype=torch.float64)
    adv = rloo_advantages(r, torch.ones(3, 4, dtype=torch.bool), normalize=True, eps=0.0)
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert adv.std().item() == pytest.approx(1.0, abs=1e-12)


def test_reinforce_pp_token_counts_match_token_level_whitening():
    # verl whitens the per-token returns: repeat each reward once per token, whiten, read back
    r = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 4.0]], dtype=torch.float64)
    counts = torch.tensor([[1, 2, 1], [3, 1, 1]])
    tokens = torch.cat([r.flatten()[i].repeat(int(c)) for i, c in enumerate(counts.flatten())])
    mu, sd = tokens.mean(), tokens.std()  # torch.std: unbiased
    adv = reinforce_pp_advantages(r, ALL, eps=0.0, token_counts=counts)
    torch.testing.assert_close(adv, (r - mu) / sd, rtol=0, atol=1e-12)


def test_reinforce_pp_equal_group_keeps_batch_signal():
    # without a group baseline an all-correct group is above the batch mean: positive advantage
    r = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    adv = reinforce_pp_advantages(r, torch.ones(2, 2, dtype=torch.bool))
    assert (adv[0] > 0).all() and (adv[1] < 0).all()


def test_float32_in_float32_out():
    adv = grpo_advantages(R.float(), ALL)
    assert adv.dtype == torch.float32


@pytest.mark.parametrize("bad", [
    (torch.zeros(3), torch.ones(3, dtype=torch.bool)),                 # not 2-D
    (torch.zeros(2, 3), torch.ones(3, 2, dtype=torch.bool)),           # mask shape differs
    (torch.tensor([[0.0, float("nan")]]), torch.ones(1, 2, dtype=torch.bool)),  # NaN at a valid entry
])
def test_bad_inputs_raise(bad):
    with pytest.raises(ValueError):
        grpo_advantages(*bad)


def test_nan_at_masked_entry_is_fine():
    r = torch.tensor([[0.0, 1.0, float("nan")]])
    adv = grpo_advantages(r, torch.tensor([[1, 1, 0]], dtype=torch.bool))
    assert torch.isfinite(adv).all() and adv[0, 2] == 0


def test_unknown_scale_and_name():
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(R, ALL, scale="sideways")
    with pytest.raises(AhaError, match="valid names"):
        ADVANTAGES.get("gpro")

"""The converged-run tasks (charlm_long, vit_long): their sizes, and the ViT's augmentation."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")

from vectorgate_lab.compare.task import TASKS
from vectorgate_lab.compare.tasks import CHARLM_LONG_STEPS, CHARLM_SWEEP_STEPS, VIT_LONG_STEPS
from vectorgate_lab.compare.tasks.vit import _MEAN, _STD, _random_shift


def test_the_long_tasks_are_registered_with_many_evaluations():
    charlm, vit = TASKS["charlm_long"](), TASKS["vit_long"]()
    assert (charlm.steps, vit.steps) == (CHARLM_LONG_STEPS, VIT_LONG_STEPS)
    assert charlm.eval_points == vit.eval_points == 20  # the last 10% of steps spans two evaluations
    # several million training characters
    assert charlm.steps * charlm.batch_size * charlm.context >= 3_000_000
    assert vit.augment_shift == 2 and TASKS["vit_mnist"]().augment_shift == 0


def test_the_sweep_tasks_differ_only_in_depth():
    tasks = [TASKS[f"charlm_sweep_{n}l"]() for n in (4, 8, 16)]
    assert [t.n_layer for t in tasks] == [4, 8, 16]
    assert {(t.steps, t.n_embd, t.context, t.batch_size, t.lr) for t in tasks} == {
        (CHARLM_SWEEP_STEPS, 128, 64, 32, tasks[0].lr)}


def test_random_shift_moves_each_image_by_its_own_offset_and_fills_with_background():
    x = torch.full((3, 1, 28, 28), -_MEAN / _STD)
    x[:, :, 10, 12] = 5.0  # one bright pixel per image
    g = torch.Generator().manual_seed(0)
    y = _random_shift(x, 2, g)
    offsets = torch.randint(-2, 3, (3, 2), generator=torch.Generator().manual_seed(0)).tolist()
    for i, (dy, dx) in enumerate(offsets):
        assert y[i, 0, 10 + dy, 12 + dx] == 5.0
        assert int((y[i] == 5.0).sum()) == 1
    assert torch.equal(_random_shift(x, 2, torch.Generator().manual_seed(0)), y)  # from the generator only


def test_vit_long_batches_are_augmented_and_vit_mnist_batches_are_not():
    for name, changed in (("vit_long", True), ("vit_mnist", False)):
        task = TASKS[name]()
        task.x_train = torch.randn(50, 1, 28, 28)
        task.y_train = torch.zeros(50, dtype=torch.long)
        x, _ = task.batch(1, torch.Generator().manual_seed(3))
        idx = torch.randint(50, (task.batch_size,), generator=torch.Generator().manual_seed(3))
        assert (not torch.equal(x, task.x_train[idx])) == changed


def test_late_gain_reads_the_last_tenth_of_the_curve():
    from vectorgate_lab.compare.report import late_gain

    lower = {"steps": 100, "higher_is_better": False, "curve": [[50, 3.0], [90, 2.02], [100, 2.0]]}
    assert late_gain(lower) == pytest.approx(0.01)  # (2.02 - 2.0) / 2.0: still improving by 1%
    higher = {"steps": 100, "higher_is_better": True, "curve": [[80, 0.90], [95, 0.95], [100, 0.99]]}
    assert late_gain(higher) == pytest.approx((0.99 - 0.90) / 0.99)  # point at or before step 90
    worse = {"steps": 100, "higher_is_better": True, "curve": [[90, 0.9], [100, 0.8]]}
    assert late_gain(worse) == pytest.approx(-0.125)
    assert late_gain({"steps": 100, "higher_is_better": True, "curve": [[100, 0.9]]}) is None

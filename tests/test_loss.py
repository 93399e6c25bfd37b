"""Dice + CE loss against hand-computed values, deep-supervision weights and wrapper, TP/FP/FN counts."""

import math

import pytest
import torch

from covtransfer.training.loss import (DeepSupervisionLoss, DiceCELoss, deep_supervision_weights, dice_from_counts,
                                       tp_fp_fn)

SMOOTH = 1e-5


def logits_for(foreground_probabilities):
    """Two-class logits (B, 2, 1, 1, N) whose softmax gives the listed foreground probabilities."""
    p = torch.tensor(foreground_probabilities, dtype=torch.float64)
    fg = torch.log(p / (1 - p))
    return torch.stack([torch.zeros_like(fg), fg], dim=1)[:, :, None, None, :]


def labels(values):
    return torch.tensor(values).reshape(len(values), 1, 1, 1, -1)


def test_perfect_prediction_gives_zero():
    target = torch.randint(0, 3, (2, 1, 4, 5, 6))
    logits = 50.0 * torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).double()
    assert float(DiceCELoss()(logits, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(DiceCELoss(weight_ce=0)(logits, target[:, 0])) == pytest.approx(0.0, abs=1e-6)


def test_two_voxel_case_by_hand():
    logits, target = logits_for([[0.8, 0.4]]), labels([[1, 0]])
    dice = (2 * 0.8 + SMOOTH) / (1.2 + 1.0 + SMOOTH)
    cross_entropy = -(math.log(0.8) + math.log(0.6)) / 2
    assert float(DiceCELoss(weight_ce=0)(logits, target)) == pytest.approx(1 - dice, rel=1e-9)
    assert float(DiceCELoss(weight_dice=0)(logits, target)) == pytest.approx(cross_entropy, rel=1e-9)
    assert float(DiceCELoss()(logits, target)) == pytest.approx(cross_entropy + 1 - dice, rel=1e-9)


def test_per_sample_and_batch_dice():
    logits, target = logits_for([[0.8, 0.4], [0.1, 0.2]]), labels([[1, 0], [0, 0]])
    first = (1.6 + SMOOTH) / (2.2 + SMOOTH)
    second = SMOOTH / (0.3 + SMOOTH)  # no foreground: the prediction mass alone is penalised
    assert float(DiceCELoss(weight_ce=0)(logits, target)) == pytest.approx(1 - (first + second) / 2, rel=1e-9)
    batch = (1.6 + SMOOTH) / (2.5 + SMOOTH)
    assert float(DiceCELoss(weight_ce=0, batch_dice=True)(logits, target)) == pytest.approx(1 - batch, rel=1e-9)


def test_background_is_excluded_and_classes_average():
    # three classes, class 2 absent and never predicted -> its Dice is smooth / smooth = 1
    logits = torch.log(torch.tensor([[0.5, 0.5, 1e-12], [0.5, 0.5, 1e-12]], dtype=torch.float64)).T
    logits = logits.reshape(1, 3, 1, 1, 2)
    target = labels([[1, 0]])
    class_one = (2 * 0.5 + SMOOTH) / (1.0 + 1.0 + SMOOTH)
    assert float(DiceCELoss(weight_ce=0)(logits, target)) == pytest.approx(1 - (class_one + 1.0) / 2, rel=1e-6)


def test_ignore_index_masks_both_terms():
    kept_logits, kept_target = logits_for([[0.8, 0.4]]), labels([[1, 0]])
    logits = torch.cat([kept_logits, logits_for([[0.99, 0.01]])], dim=4)
    target = labels([[1, 0, -1, -1]])
    loss = DiceCELoss(ignore_index=-1)
    assert float(loss(logits, target)) == pytest.approx(float(DiceCELoss()(kept_logits, kept_target)), rel=1e-9)
    everything_ignored = float(DiceCELoss(ignore_index=-1)(logits, labels([[-1, -1, -1, -1]])))
    assert everything_ignored == pytest.approx(0.0, abs=1e-9)  # CE 0, Dice smooth/smooth = 1


def test_loss_is_differentiable():
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    loss = DiceCELoss()(logits, torch.randint(0, 3, (2, 1, 4, 4, 4)))
    loss.backward()
    assert loss.dim() == 0 and loss.item() > 0 and torch.isfinite(logits.grad).all()


def test_half_precision_logits_give_float32_loss():
    logits, target = logits_for([[0.8, 0.4]]), labels([[1, 0]])
    half = DiceCELoss(weight_ce=0)(logits.half(), target)
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(DiceCELoss(weight_ce=0)(logits, target)), abs=1e-3)


@pytest.mark.parametrize("n, expected", [
    (1, [1.0]), (2, [1.0, 0.0]), (3, [2 / 3, 1 / 3, 0.0]), (4, [4 / 7, 2 / 7, 1 / 7, 0.0]),
    (5, [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])])
def test_deep_supervision_weights(n, expected):
    assert deep_supervision_weights(n) == pytest.approx(expected)


def test_deep_supervision_weights_rejects_zero():
    with pytest.raises(ValueError):
        deep_supervision_weights(0)


def test_deep_supervision_loss_weights_levels_and_skips_zero_weight():
    base = DiceCELoss()
    outputs = [torch.randn(2, 2, 4, 4, 4, dtype=torch.float64), torch.randn(2, 2, 2, 2, 2, dtype=torch.float64),
               torch.randn(7)]  # the zero-weight level is never evaluated
    targets = [torch.randint(0, 2, (2, 1, 4, 4, 4)), torch.randint(0, 2, (2, 1, 2, 2, 2)), torch.zeros(1)]
    total = DeepSupervisionLoss(base, [2 / 3, 1 / 3, 0.0])(outputs, targets)
    expected = 2 / 3 * base(outputs[0], targets[0]) + 1 / 3 * base(outputs[1], targets[1])
    assert float(total) == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ValueError):
        DeepSupervisionLoss(base, [1.0])(outputs, targets)


def test_tp_fp_fn_and_dice_from_counts():
    predicted = torch.tensor([[0, 1, 1, 2, 2, 0]])
    logits = torch.nn.functional.one_hot(predicted, 3).permute(0, 2, 1).reshape(1, 3, 1, 1, 6).float()
    target = torch.tensor([[1, 1, 0, 2, -1, 0]]).reshape(1, 1, 1, 1, 6)
    tp, fp, fn = tp_fp_fn(logits, target, ignore_index=-1)
    assert tp.tolist() == [1, 1] and fp.tolist() == [1, 0] and fn.tolist() == [1, 0]
    tp, fp, fn = tp_fp_fn(logits, target.clamp(min=0))
    assert tp.tolist() == [1, 1] and fp.tolist() == [1, 1] and fn.tolist() == [1, 0]
    dice = dice_from_counts(torch.tensor([1, 0, 0]), torch.tensor([1, 2, 0]), torch.tensor([1, 0, 0]))
    assert dice[0] == pytest.approx(0.5) and dice[1] == 0 and math.isnan(dice[2])

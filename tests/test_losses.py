"""Each MUST loss against a value computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from must_engine.training.losses import (
    FairnessLoss,
    global_local_alignment_loss,
    masked_image_modelling_loss,
    pseudo_labels,
    self_training_loss,
)
from tests.host_reads import record_host_reads


def test_pseudo_labels_threshold_is_strict():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]))
    labels, conf, ok = pseudo_labels(logits, 0.7)
    assert labels.tolist() == [0, 1, 2]
    assert conf.tolist() == pytest.approx([0.7, 0.8, 0.4])
    assert ok.tolist() == [False, True, False]  # 0.7 is not > 0.7


def test_self_training_loss_over_confident_samples_only():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1])
    confident = torch.tensor([True, True, False])
    # CE(row0, 0) = log(1 + e^-2); CE(row1, 0) = log(1 + e^1); row 2 ignored
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert self_training_loss(logits, labels, confident).item() == pytest.approx(expected)


def test_self_training_loss_with_no_confident_sample_is_zero_not_nan():
    logits = torch.randn(4, 3, requires_grad=True)
    loss = self_training_loss(logits, torch.zeros(4, dtype=torch.long),
                              torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()  # still differentiable
    assert torch.all(logits.grad == 0)


def test_fairness_loss_is_minus_mean_log_of_batch_average():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]])
    avg = [0.3, 0.425, 0.275]
    expected = -sum(math.log(a) for a in avg) / 3
    loss = FairnessLoss(3)(torch.log(p))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    uniform = FairnessLoss(3)(torch.zeros(5, 3))
    assert uniform.item() == pytest.approx(math.log(3))  # its minimum


def test_fairness_running_average_for_many_classes():
    loss = FairnessLoss(4, running_from=4)
    a = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    b = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    first = loss(a)
    assert first.item() == pytest.approx(-(sum(math.log(v) for v in (.4, .3, .2, .1)) / 4) / 0.5)
    second = loss(b)  # p = 0.5 * (p_prev + p_batch) = uniform 0.25
    assert second.item() == pytest.approx(math.log(4) / 0.5)


def test_fairness_gather_hook_sees_the_probabilities():
    seen = []

    def gather(t):
        seen.append(t.shape)
        return torch.cat([t, t])

    FairnessLoss(3, gather=gather)(torch.zeros(2, 3))
    assert seen == [torch.Size([2, 3])]


def test_mim_loss_counts_masked_pixels_and_channels():
    target = torch.zeros(1, 3, 2, 2)
    recon = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]] * 3])  # same values in each channel
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # two masked pixels
    # sum |diff| over masked = 3 channels * (1 + 4) = 15; divided by 2 pixels * 3 channels
    assert masked_image_modelling_loss(recon, target, mask).item() == pytest.approx(15 / 6)
    none = masked_image_modelling_loss(recon, target, torch.zeros_like(mask))
    assert none.item() == 0.0


def test_alignment_loss_mean_squared_distance_over_masked_patches():
    cls = torch.tensor([[1.0, 0.0]])
    patches = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[False, True, True]])
    # |(0,1)-(1,0)|^2 = 2, |(-1,0)-(1,0)|^2 = 4 -> mean 3
    assert global_local_alignment_loss(patches, cls, mask).item() == pytest.approx(3.0)
    assert global_local_alignment_loss(patches, cls, torch.zeros_like(mask)).item() == 0.0


def test_alignment_target_is_stop_gradient():
    cls = torch.tensor([[1.0, 0.0]], requires_grad=True)
    patches = torch.tensor([[[0.0, 1.0]]], requires_grad=True)
    global_local_alignment_loss(patches, cls, torch.tensor([[True]])).backward()
    assert cls.grad is None and patches.grad is not None


def test_alignment_target_gradient_flows_when_asked():
    cls = torch.tensor([[1.0, 0.0]], requires_grad=True)
    patches = torch.tensor([[[0.0, 1.0]]], requires_grad=True)
    global_local_alignment_loss(patches, cls, torch.tensor([[True]]),
                                detach_cls=False).backward()
    assert cls.grad is not None and cls.grad.abs().sum() > 0


def test_invalid_samples_take_part_in_no_loss():
    """A sample marked invalid (an unreadable image) changes no loss, whatever it holds."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4)
    recon, target = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    pix = torch.zeros(3, 1, 4, 4)
    pix[:, :, :2] = 1
    patches = torch.nn.functional.normalize(torch.randn(3, 5, 2), dim=-1)
    cls = torch.nn.functional.normalize(torch.randn(3, 2), dim=-1)
    pmask = torch.tensor([[True, False, True, False, False]] * 3)
    valid = torch.tensor([True, True, False])
    first2 = slice(0, 2)
    assert FairnessLoss(4)(logits, valid).item() == pytest.approx(
        FairnessLoss(4)(logits[first2]).item())
    assert masked_image_modelling_loss(recon, target, pix, valid).item() == pytest.approx(
        masked_image_modelling_loss(recon[first2], target[first2], pix[first2]).item())
    assert global_local_alignment_loss(patches, cls, pmask, valid=valid).item() == pytest.approx(
        global_local_alignment_loss(patches[first2], cls[first2], pmask[first2]).item())
    # no valid sample at all: finite, and no gradient
    none = torch.zeros(3, dtype=torch.bool)
    x = logits.clone().requires_grad_(True)
    loss = FairnessLoss(4)(x, none)
    loss.backward()
    assert torch.isfinite(loss) and x.grad.abs().sum() == 0


def test_losses_read_nothing_back_from_the_device(monkeypatch):
    """No .item(), no `if tensor`, no boolean indexing: each would stall a GPU every step."""
    calls = record_host_reads(monkeypatch, ("item", "__bool__", "tolist", "nonzero"))
    logits = torch.randn(4, 3)
    labels, _conf, confident = pseudo_labels(logits, 0.5)
    self_training_loss(logits, labels, confident)
    FairnessLoss(3)(logits)
    FairnessLoss(3, running_from=2)(logits, torch.tensor([True, True, False, True]))
    masked_image_modelling_loss(torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4),
                                torch.ones(4, 1, 4, 4))
    global_local_alignment_loss(torch.randn(4, 2, 3), torch.randn(4, 3),
                                torch.tensor([[True, False]] * 4))
    monkeypatch.undo()
    assert calls == []

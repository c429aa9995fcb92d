"""The wiring of one real training step: which view each part sees, where the pseudo-labels
come from, the order of optimiser step and EMA update, the teacher's precision and the mask
block. The loss formulas themselves are tested in test_losses.py.

Each test runs one ``Trainer.train_step`` on the shipped tiny CLIP (64 px, 8-px patches) and
records what the modules and losses received.
"""

from __future__ import annotations

import copy

import pytest
import torch

import must_engine.training.trainer as trainer_module
from must_engine.demo_files import demo_model_dir
from must_engine.models.source import ModelSpec
from must_engine.runs import TrainJob
from must_engine.training.ema import ema_decay
from must_engine.training.trainer import Trainer, prepare_run
from tests.host_reads import record_host_reads

BATCH = 6


@pytest.fixture
def trainer(tmp_path, image_folder, class_names):
    overrides = {"epochs": 1, "batch_size": BATCH, "seed": 1, "mask_ratio": 0.25,
                 "mask_patch_size": 0, "conf_threshold": 0.0, "base_lr": 1.0,
                 "ema_decay_init": 0.5, "num_workers": 0, "preset": "pets"}  # the published method
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(demo_model_dir())),
                   templates=["a photo of a {}."], overrides=overrides)
    prepare_run(job, tmp_path / "run")
    return Trainer(tmp_path / "run")


def views(size: int = 64):
    g = torch.Generator().manual_seed(5)
    weak = torch.randn(BATCH, 3, size, size, generator=g)
    strong = torch.randn(BATCH, 3, size, size, generator=g)
    return weak, strong, torch.arange(BATCH)


def spy(monkeypatch, owner, name: str, log: list) -> None:
    """Replace ``owner.name`` by a wrapper that records (args, kwargs, result)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        log.append((args, kwargs, result))
        return result

    monkeypatch.setattr(owner, name, wrapper)


def test_teacher_sees_the_weak_view_and_student_the_strong_one(trainer, monkeypatch):
    weak, strong, index = views()
    teacher_in, student_in = [], []
    spy(monkeypatch, trainer.teacher.module, "forward", teacher_in)
    spy(monkeypatch, trainer.student, "forward_train", student_in)
    trainer.train_step(weak, strong, index)
    assert len(teacher_in) == 1 and torch.equal(teacher_in[0][0][0], weak)
    assert len(student_in) == 1 and torch.equal(student_in[0][0][0], strong)
    assert student_in[0][0][1] is not None and student_in[0][0][1].any()  # masked


def test_mim_target_is_the_students_input(trainer, monkeypatch):
    weak, strong, index = views()
    calls = []
    spy(monkeypatch, trainer_module, "masked_image_modelling_loss", calls)
    trainer.train_step(weak, strong, index)
    assert len(calls) == 1
    target = calls[0][0][1]
    assert torch.equal(target, strong)


def test_pseudo_labels_come_from_the_teacher_on_the_weak_view(trainer, monkeypatch):
    weak, strong, index = views()
    # Make the teacher disagree with the student everywhere: its classes are the student's
    # shifted by one, so labels taken from the student cannot pass for the teacher's.
    with torch.no_grad():
        cls = trainer.teacher.module.classifier
        cls.copy_(cls.roll(1, dims=1))
        expected = trainer.teacher.module(weak).argmax(dim=1)
        from_student = trainer.student(weak).argmax(dim=1)
    assert (expected != from_student).all()
    calls = []
    spy(monkeypatch, trainer_module, "self_training_loss", calls)
    trainer.train_step(weak, strong, index)
    labels, confident = calls[0][0][1], calls[0][0][2]
    assert torch.equal(labels, expected)
    assert confident.all()  # threshold 0: every label counts
    assert torch.equal(trainer.last_label[index], expected)


def test_ema_update_follows_the_optimiser_step(trainer):
    weak, strong, index = views()
    s = trainer.settings
    decay = ema_decay(0, s.ema_decay_init, s.ema_decay_final, s.ema_warm_it)
    assert decay == 0.5
    t0 = {k: v.clone() for k, v in trainer.teacher.module.named_parameters()}
    s0 = {k: v.detach().clone() for k, v in trainer.student.named_parameters()}
    trainer.train_step(weak, strong, index)
    s1 = dict(trainer.student.named_parameters())
    moved = max((s1[k].detach() - s0[k]).abs().max().item() for k in s0)
    assert moved > 1e-3  # the step changed the student, so the order shows
    for k, t1 in trainer.teacher.module.named_parameters():
        expected = decay * t0[k] + (1 - decay) * s1[k].detach()
        assert torch.allclose(t1, expected, atol=1e-6), k


def test_teacher_runs_in_fp32_under_autocast(trainer, monkeypatch):
    """CPU autocast (bf16) stands in for CUDA's: the student trains in bf16, the teacher's
    logits and the pseudo-labels are fp32, equal to a plain fp32 forward."""
    weak, strong, index = views()
    with torch.no_grad():
        reference = copy.deepcopy(trainer.teacher.module)(weak)
    trainer.amp_dtype = torch.bfloat16
    teacher_out, student_out, labelled = [], [], []
    spy(monkeypatch, trainer.teacher.module, "forward", teacher_out)
    spy(monkeypatch, trainer.student, "forward_train", student_out)
    spy(monkeypatch, trainer_module, "pseudo_labels", labelled)
    trainer.train_step(weak, strong, index)
    assert student_out[0][2].logits.dtype == torch.bfloat16  # autocast is on for the student
    logits = teacher_out[0][2]
    assert logits.dtype == torch.float32
    assert torch.equal(logits, reference)
    assert torch.equal(labelled[0][0][0], reference)


def test_mask_block_zero_is_chosen_from_the_model(trainer, monkeypatch):
    # 64 px with 8-px patches: 0 means a 16-px block (2x2 patches), not the 8-px patch.
    assert trainer.settings.mask_patch_size == 0
    assert trainer.mask_spec.mask_patch_size == 16
    weak, strong, index = views()
    calls = []
    spy(monkeypatch, trainer.student, "forward_train", calls)
    trainer.train_step(weak, strong, index)
    mask = calls[0][0][1]  # [B, 8, 8] patch grid, masked in aligned 2x2 blocks
    blocks = mask.view(BATCH, 4, 2, 4, 2)
    assert torch.equal(blocks.all(dim=(2, 4)), blocks.any(dim=(2, 4)))


def test_mask_block_for_vit_b16_at_224_is_32_px():
    import open_clip

    from must_engine.models.must_model import must_model_from_config
    from must_engine.settings import MustSettings

    cfg = open_clip.get_model_config("ViT-B-16")
    model = must_model_from_config({"embed_dim": cfg["embed_dim"],
                                    "vision_cfg": cfg["vision_cfg"], "quick_gelu": False,
                                    "num_classes": 2, "logit_scale": 100.0})
    assert (model.image_size, model.patch_size) == (224, 16)
    spec = trainer_module.mask_spec(model.image_size, model.patch_size,
                                    MustSettings(mask_patch_size=0))
    assert spec.mask_patch_size == 32
    assert trainer_module.mask_spec(224, 16, MustSettings(mask_patch_size=112)).mask_patch_size == 112


def test_fairness_prior_resets_at_each_epoch(trainer):
    trainer.fair.running = True  # as with >= 512 classes
    weak, strong, index = views()
    trainer.train_step(weak, strong, index)
    assert trainer.fair.previous is not None
    stale = torch.full_like(trainer.fair.previous, 123.0)
    trainer.fair.previous = stale.clone()
    trainer.step = trainer.steps_per_epoch  # first step of the next epoch
    trainer.train_step(weak, strong, index)
    assert trainer.fair.previous.max() < 1.0  # a fresh batch mean, no trace of the stale one
    # mid-epoch the prior carries over
    trainer.fair.previous = stale.clone()
    trainer.train_step(weak, strong, index)
    assert trainer.fair.previous.min() > 50


def test_batch_clamped_to_the_folder_scales_the_learning_rate(tmp_path, image_folder,
                                                              class_names):
    from must_engine.settings import MustSettings

    settings = MustSettings(epochs=1, batch_size=1000, base_lr=2.56e-3, num_workers=0)
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(demo_model_dir())),
                   templates=["a photo of a {}."], settings=settings)
    run = prepare_run(job, tmp_path / "run")
    assert run.settings.batch_size == 24  # the folder's 24 images, recorded as such
    run.data["settings"]["batch_size"] = 1000  # a run.json edited by hand
    run.save()
    trainer = Trainer(tmp_path / "run")
    assert trainer.batch_size == 24
    weak, strong, index = views()
    trainer.train_step(weak[:1].expand(24, -1, -1, -1), strong[:1].expand(24, -1, -1, -1),
                       torch.arange(24))
    top = max(g["lr"] for g in trainer.optimizer.param_groups)
    assert top == pytest.approx(2.56e-3 * 24 / 256)


def test_a_step_reads_nothing_back_from_the_device(trainer, monkeypatch):
    """No .item(), `if tensor`, .tolist(), bincount or boolean indexing in the engine's code
    of a step: on a GPU each waits for the queued work (metrics are read back every few steps
    instead). torch's own internals (the CPU optimiser's step counter) are not counted."""
    weak, strong, index = views()
    calls = record_host_reads(monkeypatch, ("item", "__bool__", "tolist", "nonzero", "cpu"),
                              only_from_engine=True, functions=("bincount",))
    metrics = trainer.train_step(weak, strong, index)
    monkeypatch.undo()
    assert calls == []
    assert metrics.shape == (7,)

"""Benchmark 1: the engine's MUST training step against its floor, a bare open_clip step.

The floor is what any self-training step must do: the teacher's forward pass on the weak
view, the student's forward and backward pass on the strong view, one AdamW step, with
open_clip's own image tower and nothing else. The engine's step adds the [MASK] tokens, the
pixel decoder, the four losses and the EMA update. Both run in the same process on the same
inputs, interleaved (engine, floor, engine, floor...), so load from other processes hits
both alike; the ratio of the medians is printed. Target: <= 1.10.

    python tests/bench/bench_step_floor.py --data /tmp/must-speed [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_data import add_data_args, one_thread, photos_256, tiny_clip, vit_b32  # noqa: E402

TARGET = 1.10


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_trainer(model_dir: Path, images: Path, run_dir: Path, batch: int, device: str,
                   **overrides):
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import Trainer, prepare_run

    job = TrainJob(images, ["daisy", "dandelion", "rose", "sunflower", "tulip"],
                   ModelSpec.parse(str(model_dir)), ["a photo of a {}."],
                   overrides={"batch_size": batch, "epochs": 1, "image_cache": "off",
                              **overrides})
    prepare_run(job, run_dir, device=device)
    return Trainer(run_dir, device=device)


class FloorStep:
    """A bare open_clip self-training step: teacher forward, student forward/backward, AdamW."""

    def __init__(self, model_dir: Path, num_classes: int, device, lr: float):
        import open_clip
        import torch

        model = open_clip.create_model("local-dir:" + str(model_dir))
        self.student = model.visual.to(device).train()
        self.teacher = copy.deepcopy(self.student).eval().requires_grad_(False)
        dim = self.student.output_dim
        self.classifier = torch.nn.Parameter(torch.randn(dim, num_classes, device=device))
        params = [*self.student.parameters(), self.classifier]
        fused = {"fused": True} if device.type in ("cuda", "mps") else {}
        self.opt = torch.optim.AdamW(params, lr=lr, **fused)
        self.device = device

    def _logits(self, tower, x):
        import torch.nn.functional as F

        return 100.0 * F.normalize(tower(x), dim=-1) @ F.normalize(self.classifier, dim=0)

    def __call__(self, weak, strong, amp_dtype):
        import contextlib

        import torch
        import torch.nn.functional as F

        cast = (torch.autocast(self.device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
        with torch.no_grad(), cast:
            labels = self._logits(self.teacher, weak).argmax(dim=-1)
        with cast:
            loss = F.cross_entropy(self._logits(self.student, strong), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def measure(name: str, model_dir: Path, images: Path, batch: int, reps: int, device: str,
            **overrides):
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        trainer = engine_trainer(model_dir, images, Path(tmp) / "run", batch, device,
                                 **overrides)
        dev = trainer.device
        size = trainer.info.preprocess.image_size
        floor = FloorStep(model_dir, trainer.num_classes, dev, trainer.settings.lr())
        g = torch.Generator().manual_seed(0)
        weak = torch.randn(batch, 3, size, size, generator=g).to(dev)
        strong = torch.randn(batch, 3, size, size, generator=g).to(dev)
        index = torch.arange(batch)
        trainer.total_steps = 10**6  # stepping past the schedule is fine for timing

        def engine():
            trainer.train_step(weak, strong, index)

        def bare():
            floor(weak, strong, trainer.amp_dtype)

        times = {"engine": [], "floor": []}
        for rep in range(reps + 1):  # the first round warms both up and is not counted
            for key, fn in (("engine", engine), ("floor", bare)):
                _sync(dev)
                t0 = time.perf_counter()
                fn()
                _sync(dev)
                if rep:
                    times[key].append(time.perf_counter() - t0)
        e, f = statistics.median(times["engine"]), statistics.median(times["floor"])
        ratio = e / f
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"{name} batch {batch} on {dev}: engine step {e * 1000:.0f} ms, bare open_clip "
              f"step {f * 1000:.0f} ms, ratio {ratio:.2f} (target <= {TARGET:.2f}: {verdict}); "
              f"engine {batch / e:.1f} images/s")
        return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--vit-batch", type=int, default=8,
                   help="ViT-B-32 batch (8 keeps a CPU run short; use 32+ on a GPU)")
    args = p.parse_args()
    one_thread()
    images = photos_256(args.data, args.photos)
    measure("tiny CLIP, full MUST", tiny_clip(), images, 32, args.reps, args.device)
    # The demo's settings: masked image modelling and alignment off (no pixel decoder).
    measure("tiny CLIP, MIM and alignment off", tiny_clip(), images, 32, args.reps, args.device,
            use_mim=False, use_align=False)
    measure("ViT-B-32 (random weights)", vit_b32(args.data), images, args.vit_batch,
            max(2, args.reps // 2), args.device)


if __name__ == "__main__":
    main()

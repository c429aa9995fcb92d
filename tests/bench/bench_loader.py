"""Benchmark 2: training loader throughput, cold and warm decoded-image cache.

On 200 photos of 12 megapixels and on 200 photos of 256x256, the training dataset (weak view
+ strong view per image, ViT-B-32 preprocess at 224 px) goes through the loader with this
machine's default workers, three ways in the same process: decoding the original at full
size every time (what the engine did before the cache), with an empty cache (first epoch),
and with the cache filled (every later epoch). It then times the engine's ViT-B-32 step here
(random weights) to say whether the loader keeps up. Targets: warm >= 5x cold on the 12 MP
photos; the loader >= 2x the step's consumption here.

    python tests/bench/bench_loader.py --data /tmp/must-speed [--photos DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_data import (  # noqa: E402
    add_data_args,
    one_thread,
    photos_12mp,
    photos_256,
    vit_b32,
)

# Stated, not measured (no GPU here): an A100-class GPU trains ViT-B/32 at 224 px in bf16 at
# roughly this many images per second with MUST's step (teacher forward + student
# forward/backward, about 4 forward passes' worth of compute).
GPU_RATE_STATED = 1500.0
WARM_OVER_COLD_TARGET = 5.0
LOADER_OVER_STEP_TARGET = 2.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FullDecode:
    """The engine's old path: every read decodes the original at full size."""

    def load(self, path):
        from must_engine.images import load_rgb

        return load_rgb(path)


def epoch_rate(dataset, batch: int) -> float:
    from must_engine.training.data import loader_plan, make_loader

    plan = loader_plan("cpu")
    loader = make_loader(dataset, list(range(len(dataset))), batch, plan, drop_last=False)
    t0 = time.perf_counter()
    n = sum(len(index) for _, _, index in loader)
    return n / (time.perf_counter() - t0)


def loader_rates(folder: Path, label: str) -> dict[str, float]:
    from must_engine.image_cache import ImageSource, cache_side
    from must_engine.training.data import TwoViewDataset, loader_plan
    from must_engine.views import Preprocess

    pp = Preprocess(224, CLIP_MEAN, CLIP_STD)
    files = sorted(p.name for p in folder.glob("*.jpg"))
    side = cache_side(224, 0.3)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        full = TwoViewDataset(folder, files, pp, seed=0, source=FullDecode())
        cached = TwoViewDataset(folder, files, pp, seed=0,
                                source=ImageSource(side, Path(tmp) / "cache"))
        out["full decode"] = epoch_rate(full, 32)
        out["cold cache"] = epoch_rate(cached, 32)
        cached.set_epoch(1)
        out["warm cache"] = epoch_rate(cached, 32)
    workers = loader_plan("cpu").workers
    print(f"{label} ({len(files)} files, {workers} loader workers, one core): "
          + ", ".join(f"{k} {v:.1f} images/s" for k, v in out.items()))
    return out


def step_rate(model_dir: Path, images: Path) -> float:
    import torch
    from bench_step_floor import engine_trainer

    batch = 8
    with tempfile.TemporaryDirectory() as tmp:
        trainer = engine_trainer(model_dir, images, Path(tmp) / "run", batch, "cpu")
        trainer.total_steps = 10**6
        x = torch.randn(batch, 3, 224, 224)
        trainer.train_step(x, x, torch.arange(batch))  # warm-up
        t0 = time.perf_counter()
        for _ in range(2):
            trainer.train_step(x, x, torch.arange(batch))
        return 2 * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    args = p.parse_args()
    one_thread()
    big = loader_rates(photos_12mp(args.data, args.photos), "12 MP photos")
    small = loader_rates(photos_256(args.data, args.photos), "256-px photos")
    ratio = big["warm cache"] / big["cold cache"]
    print(f"12 MP warm / cold: {ratio:.1f}x (target >= {WARM_OVER_COLD_TARGET:.0f}x: "
          f"{'met' if ratio >= WARM_OVER_COLD_TARGET else 'NOT met'}); warm / full decode "
          f"{big['warm cache'] / big['full decode']:.1f}x, cold / full decode "
          f"{big['cold cache'] / big['full decode']:.1f}x")
    ratio_small = small["warm cache"] / small["cold cache"]
    print(f"256-px warm / cold: {ratio_small:.1f}x")
    step = step_rate(vit_b32(args.data), photos_256(args.data, args.photos))
    for name, rates in (("12 MP", big), ("256 px", small)):
        r = rates["warm cache"] / step
        print(f"{name}: loader (warm) / ViT-B-32 step here ({step:.1f} images/s): {r:.1f}x "
              f"(target >= {LOADER_OVER_STEP_TARGET:.0f}x: "
              f"{'met' if r >= LOADER_OVER_STEP_TARGET else 'NOT met'})")
        cores = GPU_RATE_STATED / rates["warm cache"]
        print(f"{name}: a GPU training ViT-B-32 at ~{GPU_RATE_STATED:.0f} images/s (stated, not "
              f"measured) needs ~{cores:.0f} such cores warm, "
              f"~{GPU_RATE_STATED / rates['cold cache']:.0f} cold")


if __name__ == "__main__":
    main()

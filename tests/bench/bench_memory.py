"""Benchmark 5a: peak memory of one ViT-B-32 MUST training step at batch 32 on the CPU.

The run is prepared in one process (loading the text tower costs memory the step never
needs); a fresh process then builds the trainer (student, EMA teacher, AdamW) and takes
two steps on random 224-px inputs. Printed: resident memory after building, the peak during
the steps, and the step's own share (peak minus built). There is no target in the issue for
this figure; it says what a laptop needs. (Benchmark 5b, the GUI grid's memory growth, is
bench_gui_stall.py.)

    python tests/bench/bench_memory.py --data /tmp/must-speed [--photos DIR]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_data import add_data_args, one_thread, photos_256, vit_b32  # noqa: E402

BATCH = 32


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(run_dir: Path) -> None:
    one_thread()
    import torch

    from must_engine.training.trainer import Trainer

    trainer = Trainer(run_dir, device="cpu")
    trainer.total_steps = 10**6
    built, built_peak = rss_mb(), peak_mb()
    x = torch.randn(BATCH, 3, 224, 224)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        trainer.train_step(x, x.clone(), torch.arange(BATCH))
        times.append(time.perf_counter() - t0)
    peak = peak_mb()
    print(f"ViT-B-32 step, batch {BATCH}, CPU fp32: resident after building the trainer "
          f"{built:.0f} MB (peak so far {built_peak:.0f} MB); peak during two steps "
          f"{peak:.0f} MB, the step's share {peak - built:.0f} MB; step "
          f"{min(times):.1f} s ({BATCH / min(times):.1f} images/s, one thread)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child)
        return
    one_thread()
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import prepare_run

    model = vit_b32(args.data)
    images = photos_256(args.data, args.photos)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        job = TrainJob(images, ["daisy", "dandelion", "rose", "sunflower", "tulip"],
                       ModelSpec.parse(str(model)), ["a photo of a {}."],
                       overrides={"batch_size": BATCH, "epochs": 1, "image_cache": "off"})
        prepare_run(job, run_dir, device="cpu")
        subprocess.run([sys.executable, __file__, "--data", str(args.data), "--child",
                        str(run_dir)], check=True)


if __name__ == "__main__":
    main()

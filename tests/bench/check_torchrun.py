"""The data-parallel check of tests/test_distributed.py on any device: one process against
N under torchrun, on the tiny test CLIP, with the same global batch.

Not part of the test run. On a machine with N >= 2 GPUs it checks the NCCL path:

    python tests/bench/check_torchrun.py --nproc 2 --device cuda --out /tmp/torchrun-check

(``--device cpu`` runs the gloo path, as the test does). NCCL puts one process on each GPU,
so N cannot exceed the GPU count. Prints, and writes to ``--out``/result.json: the largest
teacher-weight difference (the attention key bias apart, see the test), how far the
teacher moved, whether the files written and the predictions agree, and the wall time of
each run (for information only: the tiny model says nothing about speed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["red circle", "green square", "blue circle"]
SETTINGS = ["--epochs", "2", "--seed", "3", "--mask-ratio", "0.25", "--base-lr", "0.05",
            "--ema-decay-init", "0.8", "--ema-decay-final", "0.8", "--threshold", "0.8",
            "--keep", "last", "--quiet"]


def run(cmd: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from must_engine.testing import write_image_folder, write_tiny_model
    from must_engine.weights import read_weights

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = write_tiny_model(out / "model")
    images = write_image_folder(out / "photos", CLASSES, 4 * args.nproc)  # 3 x 4N images
    batch = str(3 * args.nproc)  # splits evenly over N processes
    base = [sys.executable, "-m", "must_engine", "train", str(images), "--classes",
            ",".join(CLASSES), "--model", str(model), "--batch-size", batch, "--device",
            args.device, *SETTINGS]
    one, many = out / "one", out / "many"
    seconds = {"one": run([*base, "--out", str(one)]),
               "many": run([*base, "--out", str(many), "--nproc", str(args.nproc)])}
    a, b = read_weights(one / "model.safetensors")[0], read_weights(many / "model.safetensors")[0]
    start = read_weights(one / "zero_shot.safetensors")[0]
    worst, key_bias = 0.0, 0.0
    for k in a:
        diff = (a[k] - b[k]).abs()
        if k.endswith("attn.in_proj_bias"):
            q, key, v = diff.view(3, -1)
            key_bias = max(key_bias, key.max().item())
            diff = torch.cat([q, v])
        worst = max(worst, diff.max().item())
    predict = [sys.executable, "-m", "must_engine", "predict"]
    run([*predict, str(one), str(images), "--out", str(out / "one.csv"), "--device",
         args.device, "--quiet", "--overwrite"])
    run([*predict, str(many), str(images), "--out", str(out / "many.csv"), "--device",
         args.device, "--quiet", "--overwrite", "--nproc", str(args.nproc)])

    def rows(name: str) -> list[dict]:
        with (out / name).open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    ra, rb = rows("one.csv"), rows("many.csv")
    probs = [k for k in ra[0] if k.startswith("p_")]
    result = {
        "device": args.device, "processes": args.nproc,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "teacher_moved": max((a[k] - start[k]).abs().max().item() for k in a if k in start),
        "teacher_max_diff": worst, "key_bias_max_diff": key_bias,
        "same_files": sorted(x.name for x in one.iterdir()) ==
        sorted(x.name for x in many.iterdir()),
        "same_labels": [r["label"] for r in ra] == [r["label"] for r in rb],
        "prediction_max_diff": max(abs(float(x[k]) - float(y[k]))
                                   for x, y in zip(ra, rb, strict=True) for k in probs),
        "seconds": seconds,
        "processes_in_run_json": json.loads((many / "run.json").read_text())["processes"],
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

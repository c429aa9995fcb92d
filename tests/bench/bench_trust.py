"""Trust benchmark (not part of the tests): on the sandbox, per seed,

- a spot-check of 30 truthful answers on the adapted run: its 95 % interval and whether it
  holds the true adapted accuracy;
- 50 corrections on the least confident images (true labels, as a person would give them)
  fed to a second run as fixed labels: its accuracy against the same run without them, on
  all images and on the images that were not corrected.

Run from the repo root:

    python tests/bench/bench_trust.py --out bench-results [--seeds 0 1 2] [--per-class 100]

Prints one markdown table and writes trust.json beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from must_engine.demo_files import demo_model_dir, demo_settings_overrides, demo_templates  # noqa: E402
from must_engine.evaluate import labels_from_folders  # noqa: E402
from must_engine.models.source import ModelSpec  # noqa: E402
from must_engine.predict import predict_run  # noqa: E402
from must_engine.runs import TrainJob  # noqa: E402
from must_engine.sandbox import world  # noqa: E402
from must_engine.training.trainer import train  # noqa: E402
from must_engine.trust.spot_check import SpotCheckPlan, estimate  # noqa: E402
from must_engine.trust.user_labels import UserLabels, write_run_labels  # noqa: E402


def sandbox_target(out: Path, per_class: int, seed: int) -> tuple[Path, list[str]]:
    """Target-style sandbox pictures in one subfolder per class (labels only score)."""
    root = out / f"sandbox-target-{per_class}-{seed}"
    if not (root / ".complete").exists():
        world.write_folder(root, per_class, "target", seed, by_class_subfolders=True)
        (root / ".complete").touch()
    return root, list(world.CLASS_NAMES)


def adapt(work: Path, images: Path, names: list[str], seed: int,
          labels: UserLabels | None = None):
    run = work / f"run-{time.monotonic_ns()}"
    job = TrainJob(images, names, ModelSpec.parse(str(demo_model_dir())), demo_templates(),
                   overrides={**demo_settings_overrides(), "seed": seed})
    if labels is not None:
        write_run_labels(run, labels, names)
    for _ in train(job, run):
        pass
    return predict_run(run)


def spot_check(pred, truth: np.ndarray, seed: int, answers: int = 30):
    plan = SpotCheckPlan.build(pred.paths, pred.labels(), pred.confidences(), seed=seed)
    given, per = {}, {}
    for _ in range(answers):
        q = plan.next_question(set(given), per)
        given[q] = int(truth[pred.paths.index(q)])
        h = plan.stratum_of(q)
        per[h] = per.get(h, 0) + 1
    rows = [pred.paths.index(p) for p in given]
    adapted = dict(zip(given, pred.labels()[rows].tolist(), strict=True))
    zero = dict(zip(given, pred.zero_shot_labels()[rows].tolist(), strict=True))
    return estimate(plan, given, adapted, zero, pred.class_names)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--corrections", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    images, names = sandbox_target(args.out, args.per_class, seed=12345)
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        base = adapt(args.out, images, names, seed)
        truth = np.array(labels_from_folders(base.paths, names))
        acc = float((base.labels() == truth).mean())
        zs_acc = float((base.zero_shot_labels() == truth).mean())
        est = spot_check(base, truth, seed)
        o = est.adapted.overall
        least = np.argsort(base.confidences(), kind="stable")[: args.corrections]
        store = UserLabels()
        for i in least:
            store.set_label(base.paths[i], names[truth[i]], "inspector")
        corrected = adapt(args.out, images, names, seed, store)
        assert corrected.paths == base.paths
        rest = np.ones(len(truth), dtype=bool)
        rest[least] = False
        row = {
            "seed": seed, "images": len(truth), "zero_shot": zs_acc, "adapted": acc,
            "spot_check": [o.value, o.low, o.high], "covered": bool(o.low <= acc <= o.high),
            "spot_check_zero_shot": [est.zero_shot.overall.value, est.zero_shot.overall.low,
                                     est.zero_shot.overall.high],
            "corrected_all": float((corrected.labels() == truth).mean()),
            "corrected_rest": float((corrected.labels() == truth)[rest].mean()),
            "adapted_rest": float((base.labels() == truth)[rest].mean()),
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "trust.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print("| seed | true adapted | 30-answer estimate (95 % interval) | holds it | "
          f"+{args.corrections} corrections: all images | the other images (without) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        v, lo, hi = r["spot_check"]
        print(f"| {r['seed']} | {r['adapted']:.1%} | {v:.1%} ({lo:.1%}–{hi:.1%}) | "
              f"{'yes' if r['covered'] else 'no'} | {r['corrected_all']:.1%} "
              f"(was {r['adapted']:.1%}) | {r['corrected_rest']:.1%} ({r['adapted_rest']:.1%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

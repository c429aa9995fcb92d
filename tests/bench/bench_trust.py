"""Trust benchmark (not part of the tests): per set and seed,

- a spot-check of 30 truthful answers on the adapted run: its 95 % interval and whether it
  holds the true adapted accuracy;
- 50 corrections on the least confident images (true labels, as a person would give them)
  fed to a second run as fixed labels: its accuracy against the same run without them, on
  all images and on the images that were not corrected.

Sets (``--sets``):
  sandbox  the shipped tiny CLIP on 100 target-style pictures per class, with the demo's
           settings and prompts (what `must demo` and the shipped demo project use)
  flowers  the flowers tiny CLIP of tests/bench/bench_adaptation.py (pretrained there on half
           of ../shared/data/flowers5, cached under --cache; this bench never builds it) on
           100 "faded film" photos per class of the other half, with the settings `must
           train` chooses when given no flags (default prompts too)

Run from the repo root:

    python tests/bench/bench_trust.py --out bench-results --cache CACHE [--sets sandbox,flowers]
        [--seeds 0 1 2] [--per-class 100] [--flowers-per-class 100]

Prints one markdown table and writes trust.json beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from bench_adaptation import DEFAULT_FLOWERS, flowers_split, subset_folder  # noqa: E402

from must_engine.demo_files import demo_model_dir, demo_settings_overrides, demo_templates  # noqa: E402
from must_engine.evaluate import labels_from_folders  # noqa: E402
from must_engine.models.source import ModelSpec  # noqa: E402
from must_engine.predict import predict_run  # noqa: E402
from must_engine.runs import TrainJob  # noqa: E402
from must_engine.sandbox import tiny_clip, world  # noqa: E402
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


def flowers_target(out: Path, cache: Path, flowers: Path, per_class: int
                   ) -> tuple[Path, list[str], Path]:
    """The flowers set of the adaptation bench: (target folder, classes, cached model)."""
    model = cache / "flowers-tiny-clip"
    if not (model / tiny_clip.WEIGHTS_FILE).is_file():
        raise SystemExit(f"No flowers tiny CLIP in {cache}; build it first with "
                         "tests/bench/bench_adaptation.py --sets flowers --cache "
                         f"{cache} (this bench uses that model and its split).")
    if not flowers.is_dir():
        raise SystemExit(f"{flowers} not found; give the flowers5 folder with --flowers DIR.")
    source, target, classes = flowers_split(flowers, out, cache)
    assert source is None  # the model is cached, so nothing was built here
    return subset_folder(target, per_class), classes, model


@dataclass(frozen=True)
class TrustSet:
    """A benchmark set: its pictures, classes, model, prompts and settings overrides."""

    name: str
    images: Path
    names: list[str]
    model: Path
    templates: list[str]  # empty: the default prompts
    overrides: dict
    settings: str  # said in the report


def adapt(work: Path, tset: TrustSet, seed: int, labels: UserLabels | None = None):
    run = work / f"run-{tset.name}-s{seed}-{time.monotonic_ns()}"
    job = TrainJob(tset.images, tset.names, ModelSpec.parse(str(tset.model)),
                   list(tset.templates), overrides={**tset.overrides, "seed": seed})
    if labels is not None:
        write_run_labels(run, labels, tset.names)
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


def measure(work: Path, tset: TrustSet, seed: int, corrections: int) -> dict:
    t0 = time.perf_counter()
    base = adapt(work, tset, seed)
    truth = np.array(labels_from_folders(base.paths, tset.names))
    acc = float((base.labels() == truth).mean())
    zs_acc = float((base.zero_shot_labels() == truth).mean())
    est = spot_check(base, truth, seed)
    o = est.adapted.overall
    least = np.argsort(base.confidences(), kind="stable")[:corrections]
    store = UserLabels()
    for i in least:
        store.set_label(base.paths[i], tset.names[truth[i]], "inspector")
    corrected = adapt(work, tset, seed, store)
    assert corrected.paths == base.paths
    rest = np.ones(len(truth), dtype=bool)
    rest[least] = False
    return {
        "set": tset.name, "seed": seed, "images": len(truth), "corrections": corrections,
        "zero_shot": zs_acc, "adapted": acc,
        "spot_check": [o.value, o.low, o.high], "covered": bool(o.low <= acc <= o.high),
        "spot_check_zero_shot": [est.zero_shot.overall.value, est.zero_shot.overall.low,
                                 est.zero_shot.overall.high],
        "zero_shot_covered": bool(est.zero_shot.overall.low <= zs_acc
                                  <= est.zero_shot.overall.high),
        # how wrong the run was on the images that were then corrected
        "adapted_on_corrected": float((base.labels() == truth)[least].mean()),
        "corrected_all": float((corrected.labels() == truth).mean()),
        "corrected_rest": float((corrected.labels() == truth)[rest].mean()),
        "adapted_rest": float((base.labels() == truth)[rest].mean()),
        "seconds": time.perf_counter() - t0,
    }


def report(rows: list[dict]) -> str:
    corr = rows[0]["corrections"] if rows else 50
    lines = ["| set | seed | images | zero-shot | true adapted | 30-answer estimate (95 % "
             f"interval) | holds it | +{corr} corrections: all images (without) | the "
             "uncorrected images (without) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        v, lo, hi = r["spot_check"]
        lines.append(
            f"| {r['set']} | {r['seed']} | {r['images']} | {r['zero_shot']:.1%} | "
            f"{r['adapted']:.1%} | {v:.1%} ({lo:.1%}–{hi:.1%}) | "
            f"{'yes' if r['covered'] else 'no'} | {r['corrected_all']:.1%} "
            f"({r['adapted']:.1%}) | {r['corrected_rest']:.1%} ({r['adapted_rest']:.1%}) |")
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        gain_all = np.mean([r["corrected_all"] - r["adapted"] for r in mine])
        gain_rest = np.mean([r["corrected_rest"] - r["adapted_rest"] for r in mine])
        held = sum(r["covered"] for r in mine)
        lines.append(f"\n{name}: interval held the true accuracy {held}/{len(mine)}; "
                     f"corrections {100 * gain_all:+.1f} points on all images, "
                     f"{100 * gain_rest:+.1f} on the uncorrected ones (mean of seeds)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    ap.add_argument("--cache", type=Path, help="where tests/bench/bench_adaptation.py keeps "
                    "its built models (default <out>/cache)")
    ap.add_argument("--sets", default="sandbox,flowers")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--flowers-per-class", type=int, default=100)
    ap.add_argument("--flowers", type=Path, default=DEFAULT_FLOWERS)
    ap.add_argument("--corrections", type=int, default=50)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = (args.cache or out / "cache").resolve()
    sets = []
    for name in (n.strip() for n in args.sets.split(",") if n.strip()):
        if name == "sandbox":
            images, names = sandbox_target(out, args.per_class, seed=12345)
            sets.append(TrustSet(name, images, names, demo_model_dir(), demo_templates(),
                                 demo_settings_overrides(), "the demo's settings and prompts"))
        elif name == "flowers":
            images, names, model = flowers_target(out, cache, args.flowers,
                                                  args.flowers_per_class)
            sets.append(TrustSet(name, images, names, model, [], {},
                                 "`must train` defaults (no flags)"))
        else:
            raise SystemExit(f"Unknown set {name!r}; use sandbox, flowers.")
    rows = []
    for tset in sets:
        for seed in args.seeds:
            row = measure(out, tset, seed, args.corrections)
            row["settings"] = tset.settings
            rows.append(row)
            print(json.dumps(row), flush=True)
            # written after every seed, so a stopped run keeps what it measured
            (out / "trust.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

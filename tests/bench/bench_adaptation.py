"""The label-free accuracy benchmark: zero-shot vs self-training vs each added MUST loss.

Not part of the test run. Two row sets:

- ``sandbox``: the project's tiny CLIP (resources/models/must-tiny-clip, pretrained on the
  sandbox world's *source* style) adapted without labels to >= 1,000 *target*-style pictures;
- ``flowers``: a tiny CLIP pretrained here on one part of ../shared/data/flowers5 (plain
  photos) and adapted without labels to the rest under a shift ("faded film": desaturated,
  warm cast, low contrast, blur and grain).

Each variant is the mean of 3 seeds; labels are used only to score. Run from the repo root:

    python tests/bench/bench_adaptation.py --out bench-results

(``--sets sandbox`` or ``--sets flowers`` for one; ``--seeds 1 --quick`` for a smoke run.)
Prints one markdown table and writes results.json beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from must_engine.demo_files import demo_model_dir, demo_settings_overrides, demo_templates  # noqa: E402
from must_engine.evaluate import labels_from_folders  # noqa: E402
from must_engine.events import StepMetrics  # noqa: E402
from must_engine.models.source import ModelSpec  # noqa: E402
from must_engine.predict import predict_run  # noqa: E402
from must_engine.runs import TrainJob  # noqa: E402
from must_engine.training.trainer import prepare_run, train  # noqa: E402

FLOWERS = ROOT.parent / "shared" / "data" / "flowers5"

# Cumulative ablation: each row adds one loss to the one above.
VARIANTS: dict[str, dict] = {
    "self-training only": {"use_fair": False, "use_mim": False, "use_align": False},
    "+ fairness": {"use_fair": True, "use_mim": False, "use_align": False},
    "+ masked image modelling": {"use_fair": True, "use_mim": True, "use_align": False},
    "full MUST (+ alignment)": {"use_fair": True, "use_mim": True, "use_align": True},
}


@dataclass
class Outcome:
    accuracy: float
    seconds: float
    images_per_second: float


def accuracy_of(run_dir: Path, images: Path, class_names: list[str], *, zero_shot: bool) -> float:
    preds = predict_run(run_dir, images)
    truth = labels_from_folders(preds.paths, class_names)
    labels = preds.zero_shot_labels() if zero_shot else preds.labels()
    pairs = [(t, p) for t, p in zip(truth, labels, strict=True) if t is not None]
    return sum(int(t == p) for t, p in pairs) / len(pairs)


def run_variant(work: Path, images: Path, class_names: list[str], model_dir: Path,
                templates: list[str], overrides: dict, seed: int) -> Outcome:
    run_dir = work / f"run-{time.monotonic_ns()}"
    job = TrainJob(images, class_names, ModelSpec.parse(str(model_dir)), templates,
                   overrides={**overrides, "seed": seed})
    t0 = time.perf_counter()
    speeds = [e.images_per_second for e in train(job, run_dir) if isinstance(e, StepMetrics)]
    seconds = time.perf_counter() - t0
    acc = accuracy_of(run_dir, images, class_names, zero_shot=False)
    return Outcome(acc, seconds, statistics.median(speeds) if speeds else 0.0)


def zero_shot(work: Path, images: Path, class_names: list[str], model_dir: Path,
              templates: list[str]) -> Outcome:
    run_dir = work / f"zero-shot-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    prepare_run(TrainJob(images, class_names, ModelSpec.parse(str(model_dir)), templates),
                run_dir)
    acc = accuracy_of(run_dir, images, class_names, zero_shot=True)
    return Outcome(acc, time.perf_counter() - t0, 0.0)


def row_set(name: str, work: Path, images: Path, class_names: list[str], model_dir: Path,
            templates: list[str], base: dict, seeds: list[int], variants: dict) -> list[dict]:
    rows = []
    zs = zero_shot(work, images, class_names, model_dir, templates)
    n = len(labels_from_folders([p.relative_to(images).as_posix()
                                 for p in images.rglob("*") if p.is_file()], class_names))
    rows.append({"set": name, "variant": "zero-shot", "accuracy": [zs.accuracy] * len(seeds),
                 "seconds": [zs.seconds], "images_per_second": [0.0], "images": n})
    print(f"[{name}] zero-shot {zs.accuracy:.3f}", flush=True)
    for label, extra in variants.items():
        outs = [run_variant(work, images, class_names, model_dir, templates,
                            {**base, **extra}, seed) for seed in seeds]
        rows.append({"set": name, "variant": label, "accuracy": [o.accuracy for o in outs],
                     "seconds": [o.seconds for o in outs],
                     "images_per_second": [o.images_per_second for o in outs], "images": n,
                     "settings": {**base, **extra}})
        print(f"[{name}] {label}: " + ", ".join(f"{o.accuracy:.3f}" for o in outs), flush=True)
    return rows


# ---- data ----------------------------------------------------------------------------------
def sandbox_target(out: Path, per_class: int, seed: int) -> tuple[Path, list[str]]:
    from must_engine.sandbox import world

    root = out / "sandbox-target"
    if not root.exists():
        world.write_folder(root, per_class, "target", seed, by_class_subfolders=True)
    return root, list(world.CLASS_NAMES)


def faded_film(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The flowers shift: desaturated, warm cast, low contrast, blur and grain."""
    img = ImageEnhance.Color(img).enhance(0.35)
    img = ImageEnhance.Contrast(img).enhance(0.6)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
    arr = arr * np.array([1.08, 0.98, 0.82]) + np.array([18.0, 8.0, 0.0])
    arr += rng.normal(0, 9.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def flowers_split(out: Path, source_share: float, seed: int):
    """Per class, the first ``source_share`` of the (shuffled) photos are for pretraining
    the tiny CLIP; the rest are shifted and written as the unlabelled target folder."""
    classes = sorted(d.name for d in FLOWERS.iterdir() if d.is_dir())
    rng = np.random.default_rng(seed)
    source: list[tuple[Image.Image, int]] = []
    target = out / "flowers-target"
    make_target = not target.exists()
    for c, name in enumerate(classes):
        files = sorted((FLOWERS / name).glob("*.jpg"))
        order = rng.permutation(len(files))
        cut = int(len(files) * source_share)
        for k, i in enumerate(order):
            if k < cut:
                source.append((Image.open(files[i]).convert("RGB").resize((64, 64),
                                                                          Image.BICUBIC), c))
            elif make_target:
                dest = target / name / files[i].name
                dest.parent.mkdir(parents=True, exist_ok=True)
                faded_film(Image.open(files[i]).convert("RGB"), rng).save(dest, quality=92)
    return source, target, classes


def flowers_model(out: Path, source, classes, seed: int, epochs: int) -> Path:
    from must_engine.sandbox.tiny_clip import pretrain_tiny_clip, save_local_dir, tiny_clip_config

    model_dir = out / "flowers-tiny-clip"
    if not (model_dir / "open_clip_config.json").exists():
        t0 = time.perf_counter()
        model = pretrain_tiny_clip(source, classes, seed=seed, epochs=epochs)
        save_local_dir(model, tiny_clip_config(), model_dir)
        print(f"[flowers] pretrained tiny CLIP on {len(source)} photos in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return model_dir


# ---- report --------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    lines = ["| set | variant | top-1 (mean of seeds) | per seed | vs zero-shot | wall s/run "
             "| images/s |", "|---|---|---|---|---|---|---|"]
    zero = {r["set"]: statistics.mean(r["accuracy"]) for r in rows if r["variant"] == "zero-shot"}
    for r in rows:
        mean = statistics.mean(r["accuracy"])
        seeds = " / ".join(f"{a:.1%}" for a in r["accuracy"]) if r["variant"] != "zero-shot" \
            else "-"
        gain = f"{100 * (mean - zero[r['set']]):+.1f}" if r["variant"] != "zero-shot" else ""
        ips = statistics.mean(r["images_per_second"])
        lines.append(f"| {r['set']} ({r['images']} images) | {r['variant']} | {mean:.1%} | "
                     f"{seeds} | {gain} | {statistics.mean(r['seconds']):.0f} | "
                     f"{ips:.0f} |" if ips else
                     f"| {r['set']} ({r['images']} images) | {r['variant']} | {mean:.1%} | "
                     f"{seeds} | {gain} | {statistics.mean(r['seconds']):.0f} | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--sets", default="sandbox,flowers")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--per-class", type=int, default=100, help="sandbox target images per class")
    p.add_argument("--epochs", type=int, help="override the training epochs")
    p.add_argument("--variants", help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting for every variant (repeatable)")
    p.add_argument("--quick", action="store_true", help="few images, one epoch: a smoke run")
    args = p.parse_args(argv)
    # One thread: helpers, builds or the GUI sharing the two cores make OpenMP's spinning
    # threads 30x slower; one thread keeps runs comparable.
    torch.set_num_threads(1)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = dict(demo_settings_overrides())
    for item in args.set:
        key, value = item.split("=", 1)
        base[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    if args.epochs:
        base["epochs"] = args.epochs
    if args.quick:
        base["epochs"] = 1
    variants = VARIANTS if not args.variants else {
        k: v for k, v in VARIANTS.items() if k in args.variants.split(",")}
    seeds = list(range(args.seeds))
    rows: list[dict] = []
    t0 = time.perf_counter()
    if "sandbox" in args.sets:
        images, classes = sandbox_target(out, 10 if args.quick else args.per_class, seed=12345)
        rows += row_set("sandbox", out / "runs-sandbox", images, classes, demo_model_dir(),
                        demo_templates(), base, seeds, variants)
    if "flowers" in args.sets:
        if not FLOWERS.is_dir():
            print(f"skipping flowers: {FLOWERS} not found", file=sys.stderr)
        else:
            source, images, classes = flowers_split(out, 0.5, seed=7)
            model_dir = flowers_model(out, source, classes, seed=0, epochs=3 if args.quick else 30)
            rows += row_set("flowers", out / "runs-flowers", images, classes, model_dir,
                            [], base, seeds, variants)
    report = table(rows)
    (out / "results.json").write_text(json.dumps({"base_settings": base, "rows": rows,
                                                  "seconds": time.perf_counter() - t0},
                                                 indent=1))
    (out / "table.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

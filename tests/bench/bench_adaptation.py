"""The label-free adaptation benchmark: what `must train` with no flags does on shifts the
project makes itself, against zero-shot.

Not part of the test run. Sets (``--sets``, comma-separated names, or ``development``,
``held-out``, ``all``):

  development (defaults may be chosen by looking at these):
    sandbox      the shipped tiny CLIP on the sandbox's *target* style (textures, clutter,
                 blur, noise, low contrast)
    faded        the shipped tiny CLIP on the *faded* style (colour cast, fade, soft)
    noisy-blur   the shipped tiny CLIP on the *noisy-blur* style (heavy grain and blur)
    flowers      a tiny CLIP pretrained here on half of ../shared/data/flowers5, adapted to the
                 other half under a "faded film" shift (real photos)
  held out (never used to choose defaults; report only):
    sketch       the shipped tiny CLIP on outline drawings (pencil on paper)
    pastel       the shipped tiny CLIP on a pastel palette with textures
    clip-small   a width-32, 2-layer tiny CLIP (built and cached here) on the target style
    clip-large   a width-96, 6-layer tiny CLIP (built and cached here) on the target style

Rows per set, each the mean of ``--seeds`` seeds (0, 1, 2, ...; seed 0 is the default, the
others are what ``--seed N`` gives): zero-shot; refined and centred zero-shot (when the
engine makes them); ``must train`` with no flags but the classes (the same TrainJob the CLI
builds, no overrides but the seed); and the Spearman rank correlation between the run's
label-free score and true accuracy, over every scored classifier (epochs and starting
classifiers) of every seed.
Labels are only used to score. ``--ablation`` adds the earlier loss ablation with the demo
settings. Writes ``table.md`` and ``results.json`` under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from must_engine import events as ev  # noqa: E402
from must_engine.demo_files import demo_model_dir, demo_settings_overrides  # noqa: E402
from must_engine.evaluate import labels_from_folders  # noqa: E402
from must_engine.models.source import ModelSpec  # noqa: E402
from must_engine.predict import predict_probs, predict_run  # noqa: E402
from must_engine.runs import ZERO_SHOT_FILE, TrainJob, open_run  # noqa: E402
from must_engine.sandbox import tiny_clip, world  # noqa: E402
from must_engine.training.trainer import train  # noqa: E402

DEFAULT_FLOWERS = ROOT.parent / "shared" / "data" / "flowers5"

EPILOG = """\
examples:
  # the full benchmark (every set, 3 seeds)
  python tests/bench/bench_adaptation.py --sets all --seeds 3 --out bench-results
  # score a candidate default on the development shifts, fast (2 seeds, 30 pictures per
  # class, flowers left out); KEY=VALUE is any MustSettings field, as `must train` flags set
  python tests/bench/bench_adaptation.py --sets sandbox,faded,noisy-blur --seeds 2 \\
      --per-class 30 --set base_lr=1e-4 --set layer_decay=1.0 --out /tmp/candidate
  # the earlier loss ablation (demo settings) on the sandbox target
  python tests/bench/bench_adaptation.py --sets sandbox --ablation --out bench-results
Models built here (flowers, clip-small, clip-large) are cached under --cache (default
<out>/cache) and reused; their builds are deterministic for a seed on a given machine.
"""


@dataclass(frozen=True)
class BenchSet:
    name: str
    role: str  # "development" or "held-out"
    kind: str  # "sandbox" or "flowers"
    style: str = "target"
    model: str = "base"  # tiny CLIP size; "base" is the shipped model


SETS: dict[str, BenchSet] = {s.name: s for s in (
    BenchSet("sandbox", "development", "sandbox", "target"),
    BenchSet("faded", "development", "sandbox", "faded"),
    BenchSet("noisy-blur", "development", "sandbox", "noisy-blur"),
    BenchSet("flowers", "development", "flowers"),
    BenchSet("sketch", "held-out", "sandbox", "sketch"),
    BenchSet("pastel", "held-out", "sandbox", "pastel"),
    BenchSet("clip-small", "held-out", "sandbox", "target", "small"),
    BenchSet("clip-large", "held-out", "sandbox", "target", "large"),
)}
GROUPS = {
    "development": [s for s in SETS if SETS[s].role == "development"],
    "held-out": [s for s in SETS if SETS[s].role == "held-out"],
    "all": list(SETS),
}


@dataclass(frozen=True)
class ClipRecipe:
    """How a tiny CLIP of another size is pretrained (source-style pictures, like the
    shipped one; fewer of them, so that a build takes minutes on a CPU)."""

    per_class: int
    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    split_seed: int = 1_000


# The shipped model took 2,250 steps (600 pictures per class, 24 epochs); with under ~1,000
# the contrastive loss had barely left its plateau (a small model after 750 steps: 41% on
# source pictures). The large one takes smaller batches to get its steps in fewer pictures,
# and a lower rate: at 2e-3 its image tower stayed at chance (loss flat at 2.88 for 5 epochs).
CLIP_RECIPES = {"small": ClipRecipe(per_class=600, epochs=24),
                "large": ClipRecipe(per_class=200, epochs=12, batch_size=32, lr=1e-3)}
SANDBOX_DATA_SEED = 12345  # the target pictures; the shipped model saw other seeds only
FLOWERS_PRETRAIN_EPOCHS = 30

# The earlier cumulative loss ablation (each row adds one loss), with the demo settings.
ABLATION: dict[str, dict] = {
    "self-training only": {"use_fair": False, "use_mim": False, "use_align": False},
    "+ fairness": {"use_fair": True, "use_mim": False, "use_align": False},
    "+ masked image modelling": {"use_fair": True, "use_mim": True, "use_align": False},
    "full MUST (+ alignment)": {"use_fair": True, "use_mim": True, "use_align": True},
}


def as_published() -> dict:
    """Settings that make a run start from the text classifier and keep its last teacher,
    as the published method does (for the ablation rows), where the engine has them."""
    from dataclasses import fields

    from must_engine.settings import MustSettings

    names = {f.name for f in fields(MustSettings)}
    published = {"prototype_init": "text", "keep": "last", "refined_pseudo_labels": 0.0}
    return {k: v for k, v in published.items() if k in names}


# ---- data and models -------------------------------------------------------------------
def log(message: str) -> None:
    print(message, flush=True)


def sandbox_folder(out: Path, style: str, per_class: int) -> Path:
    root = out / "data" / f"sandbox-{style}-{per_class}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        world.write_folder(root, per_class, style, SANDBOX_DATA_SEED, by_class_subfolders=True)
        (root / ".complete").touch()
    return root


def clip_model(cache: Path, size: str) -> Path:
    """The shipped model for "base"; otherwise a tiny CLIP of ``size``, built once."""
    if size == "base":
        return demo_model_dir()
    r = CLIP_RECIPES[size]
    model_dir = cache / (f"tiny-clip-{size}-p{r.per_class}-e{r.epochs}-b{r.batch_size}"
                         f"-lr{r.lr:g}-s{r.seed}")
    if not (model_dir / tiny_clip.WEIGHTS_FILE).is_file():
        t0 = time.perf_counter()
        cfg = tiny_clip.tiny_clip_config(size)
        data = world.make_split(r.per_class, "source", r.split_seed + r.seed)
        model = tiny_clip.pretrain_tiny_clip(
            data, world.CLASS_NAMES, seed=r.seed, config=cfg,
            settings=tiny_clip.PretrainSettings(epochs=r.epochs, batch_size=r.batch_size,
                                                lr=r.lr),
            log=lambda m: log(f"  [{size} tiny CLIP] {m}"))
        tiny_clip.save_local_dir(model, cfg, model_dir)  # weights written last, atomically
        log(f"[clip-{size}] pretrained on {len(data)} source pictures in "
            f"{time.perf_counter() - t0:.0f} s")
    return model_dir


def faded_film(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The flowers shift: desaturated, warm cast, low contrast, blur and grain."""
    img = ImageEnhance.Color(img).enhance(0.35)
    img = ImageEnhance.Contrast(img).enhance(0.6)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32)
    arr = arr * np.array([1.08, 0.98, 0.82]) + np.array([18.0, 8.0, 0.0])
    arr += rng.normal(0, 9.0, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def flowers_split(flowers: Path, out: Path, cache: Path, seed: int = 7):
    """Per class, the first half of the (shuffled) photos pretrains the tiny CLIP; the rest
    are shifted and written as the unlabelled target folder. Returns (source pictures, or
    None when the model is already cached; target folder; classes)."""
    classes = sorted(d.name for d in flowers.iterdir() if d.is_dir())
    target = out / "data" / "flowers-target"
    need_source = not (cache / "flowers-tiny-clip" / tiny_clip.WEIGHTS_FILE).is_file()
    need_target = not (target / ".complete").exists()
    if not (need_source or need_target):
        return None, target, classes
    if need_target:
        shutil.rmtree(target, ignore_errors=True)
    source: list[tuple[Image.Image, int]] = []
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        files = sorted((flowers / name).glob("*.jpg"))
        order = rng.permutation(len(files))
        cut = int(len(files) * 0.5)
        for k, i in enumerate(order):
            with Image.open(files[i]) as im:
                if k < cut:
                    if need_source:
                        source.append((im.convert("RGB").resize((64, 64), Image.BICUBIC), c))
                elif need_target:
                    dest = target / name / files[i].name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    faded_film(im.convert("RGB"), rng).save(dest, quality=92)
                else:
                    # Draw the grain anyway: the split must not depend on what is cached.
                    rng.normal(0, 9.0, (im.size[1], im.size[0], 3))
    if need_target:
        (target / ".complete").touch()
    return (source if need_source else None), target, classes


def flowers_model(cache: Path, source, classes: list[str]) -> Path:
    model_dir = cache / "flowers-tiny-clip"
    if not (model_dir / tiny_clip.WEIGHTS_FILE).is_file():
        t0 = time.perf_counter()
        model = tiny_clip.pretrain_tiny_clip(source, classes, seed=0,
                                             epochs=FLOWERS_PRETRAIN_EPOCHS)
        tiny_clip.save_local_dir(model, tiny_clip.tiny_clip_config(), model_dir)
        log(f"[flowers] pretrained tiny CLIP on {len(source)} photos in "
            f"{time.perf_counter() - t0:.0f} s")
    return model_dir


def subset_folder(full: Path, per_class: int | None) -> Path:
    """The first ``per_class`` pictures (by name) of each class folder, hard-linked."""
    if not per_class:
        return full
    root = full.with_name(f"{full.name}-{per_class}")
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for cls in sorted(d for d in full.iterdir() if d.is_dir()):
        (root / cls.name).mkdir(parents=True)
        for f in sorted(p for p in cls.iterdir() if p.is_file())[:per_class]:
            os.link(f, root / cls.name / f.name)
    (root / ".complete").touch()
    return root


def prepare_set(bset: BenchSet, out: Path, cache: Path, args) -> tuple[Path, list[str], Path]:
    """(image folder with one subfolder per class, class names, model folder)."""
    if bset.kind == "sandbox":
        images = sandbox_folder(out, bset.style, args.per_class)
        return images, list(world.CLASS_NAMES), clip_model(cache, bset.model)
    source, target, classes = flowers_split(args.flowers, out, cache)
    model_dir = (flowers_model(cache, source, classes) if source is not None
                 else cache / "flowers-tiny-clip")
    return subset_folder(target, args.flowers_per_class), classes, model_dir


# ---- measuring -------------------------------------------------------------------------
def truth_of(paths: list[str], class_names: list[str]) -> np.ndarray:
    return np.array([-1 if t is None else t for t in labels_from_folders(paths, class_names)])


def accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    keep = truth >= 0
    return float((labels[keep] == truth[keep]).mean())


def _trainer_of(gen):
    """The Trainer a `train()` generator is driving (found by following its ``yield from``
    chain), so the benchmark can score its teacher with labels between epochs."""
    while gen is not None:
        frame = getattr(gen, "gi_frame", None)
        owner = frame.f_locals.get("self") if frame is not None else None
        if owner is not None and hasattr(owner, "teacher"):
            return owner
        gen = getattr(gen, "gi_yieldfrom", None)
    return None


@torch.no_grad()
def _teacher_accuracy(trainer, images: Path, class_names: list[str],
                      head: torch.Tensor | None = None) -> float:
    """The teacher's accuracy; with ``head``, of the teacher with that classifier."""
    files = trainer.files
    model = trainer.teacher.module
    if head is not None:
        import copy

        model = copy.deepcopy(model)
        model.classifier.copy_(head)
    # Restore the RNG so that looking at the teacher never changes the run.
    state = torch.random.get_rng_state()
    try:
        (probs,), ok = predict_probs([model], [images / f for f in files],
                                     trainer.info.preprocess, device=trainer.device)
    finally:
        torch.random.set_rng_state(state)
    return accuracy(probs.argmax(1), np.where(ok, truth_of(files, class_names), -1))


@torch.no_grad()
def refined_accuracy(run_dir: Path, images: Path, class_names: list[str], *,
                     part: str = "refined_classifier") -> float | None:
    """Accuracy of the refined zero-shot classifier a run saved, if the engine made one; with
    ``part="center"``, of the centred zero-shot classifier."""
    from must_engine.models.must_model import must_model_from_config
    from must_engine.weights import load_model_weights

    run = open_run(run_dir)
    model = must_model_from_config(run.architecture)
    extra = load_model_weights(run_dir / ZERO_SHOT_FILE, model)
    if part not in extra:
        return None
    with torch.no_grad():
        (model.classifier if part == "refined_classifier" else model.center).copy_(extra[part])
    files = run.image_files()
    (probs,), ok = predict_probs([model], [images / f for f in files], run.preprocess)
    return accuracy(probs.argmax(1), np.where(ok, truth_of(files, class_names), -1))


@dataclass
class RunOutcome:
    seed: int
    accuracy: float
    zero_shot: float
    refined: float | None
    seconds: float
    settings: dict
    kept: dict | None  # the ClassifierKept event, when the engine sends one
    warnings: list[str]
    # (label-free score, true accuracy) of each scored classifier: starting ones and the
    # teacher at each epoch's end
    scored: list[dict]
    centred: float | None = None  # the centred zero-shot classifier, when the run made one


def run_train(work: Path, images: Path, class_names: list[str], model_dir: Path,
              overrides: dict, seed: int, templates: list[str] | None = None) -> RunOutcome:
    """One `must train` run with no flags but the classes (and the seed when not 0), plus
    ``overrides`` (a candidate or ablation setting), scored with labels afterwards."""
    run_dir = work / f"run-s{seed}-{time.monotonic_ns()}"
    if seed:
        overrides = {**overrides, "seed": seed}
    job = TrainJob(images, class_names, ModelSpec.parse(str(model_dir)), list(templates or []),
                   overrides=overrides)
    t0 = time.perf_counter()
    gen = train(job, run_dir)
    kept, warnings, scored = None, [], []
    start_scores: list[dict] = []
    for event in gen:
        if isinstance(event, ev.RunWarning):
            warnings.append(event.message)
        name = type(event).__name__
        if name == "ClassifierScored":
            if event.kind in ("teacher", "refined_teacher"):
                trainer = _trainer_of(gen)
                head = trainer.scorer.last_refined_head if trainer and \
                    event.kind == "refined_teacher" else None
                acc = _teacher_accuracy(trainer, images, class_names, head) if trainer else None
                scored.append({"kind": event.kind, "epoch": event.epoch, "score": event.score,
                               "accuracy": acc})
            else:
                start_scores.append({"kind": event.kind, "epoch": -1, "score": event.score})
        elif name == "ClassifierKept":
            kept = {k: v for k, v in event.to_dict().items() if k != "type"}
    seconds = time.perf_counter() - t0
    preds = predict_run(run_dir, images)
    truth = truth_of(preds.paths, class_names)
    zs = accuracy(preds.zero_shot_labels(), truth)
    refined = refined_accuracy(run_dir, images, class_names)
    centred = refined_accuracy(run_dir, images, class_names, part="center")
    for s in start_scores:
        s["accuracy"] = {"zero_shot": zs, "refined": refined,
                         "centred_zero_shot": centred}.get(s["kind"])
    settings = open_run(run_dir).data.get("settings", {})
    return RunOutcome(seed, accuracy(preds.labels(), truth), zs, refined, seconds, settings,
                      kept, warnings, start_scores + scored, centred)


def spearman(points: list[tuple[float, float]]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None below 3 points or when
    one side is constant."""
    if len(points) < 3:
        return None
    a, b = (np.array(x, dtype=float) for x in zip(*points, strict=True))

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties: mean rank
            r[x == v] = r[x == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def bench_set(bset: BenchSet, out: Path, cache: Path, args, overrides: dict) -> dict:
    images, classes, model_dir = prepare_set(bset, out, cache, args)
    n = int((truth_of([p.relative_to(images).as_posix() for p in images.rglob("*")
                       if p.is_file() and not p.name.startswith(".")], classes) >= 0).sum())
    work = out / "runs" / bset.name
    outcomes = []
    for seed in args.seed_list:
        o = run_train(work, images, classes, model_dir, overrides, seed)
        outcomes.append(o)
        kept = f", kept {o.kept['label']}" if o.kept else ""
        log(f"[{bset.name}] seed {seed}: zero-shot {o.zero_shot:.3f}"
            + (f", refined {o.refined:.3f}" if o.refined is not None else "")
            + f", must train {o.accuracy:.3f}{kept} ({o.seconds:.0f} s)")
    points = [(s["score"], s["accuracy"]) for o in outcomes for s in o.scored
              if s.get("accuracy") is not None]
    within = [spearman([(s["score"], s["accuracy"]) for s in o.scored
                        if s.get("accuracy") is not None]) for o in outcomes]
    within = [r for r in within if r is not None]
    result = {"set": bset.name, "role": bset.role, "images": n, "model": bset.model,
              "style": bset.style if bset.kind == "sandbox" else "faded film (photos)",
              "overrides": overrides, "runs": [asdict(o) for o in outcomes],
              "spearman": spearman(points), "scored_points": len(points),
              "spearman_within_runs": statistics.mean(within) if within else None}
    if args.ablation:
        result["ablation"] = []
        base = {**demo_settings_overrides(), **as_published(), **overrides}
        for label, extra in ABLATION.items():
            accs = [run_train(work, images, classes, model_dir, {**base, **extra}, seed).accuracy
                    for seed in args.seed_list]
            result["ablation"].append({"variant": label, "accuracy": accs,
                                       "settings": {**base, **extra}})
            log(f"[{bset.name}] ablation {label}: " + ", ".join(f"{a:.3f}" for a in accs))
    return result


# ---- report ----------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _kept_short(kept: dict | None) -> str:
    if not kept:
        return "-"
    if kept["kind"] == "teacher":
        return f"epoch {kept['epoch'] + 1}"
    if kept["kind"] == "refined_teacher":
        return f"refined epoch {kept['epoch'] + 1}"
    return kept["kind"].replace("_", "-")


def table(results: list[dict], row_label: str) -> str:
    have_refined = any(o["refined"] is not None for r in results for o in r["runs"])
    have_centred = any(o.get("centred") is not None for r in results for o in r["runs"])
    have_rho = any(r["spearman"] is not None for r in results)
    head = ["set", "role", "images", "zero-shot"]
    head += ["refined zero-shot"] if have_refined else []
    head += ["centred zero-shot"] if have_centred else []
    head += [row_label, "per seed", "vs zero-shot", "worst seed vs zero-shot"]
    have_kept = any(o["kept"] for r in results for o in r["runs"])
    head += ["label-free rho"] if have_rho else []
    head += ["kept (per seed)"] if have_kept else []
    head += ["s/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        runs = r["runs"]
        zs = statistics.mean(o["zero_shot"] for o in runs)
        accs = [o["accuracy"] for o in runs]
        cells = [r["set"], r["role"], str(r["images"]), _pct(zs)]
        if have_refined:
            ref = [o["refined"] for o in runs if o["refined"] is not None]
            cells.append(_pct(statistics.mean(ref)) if ref else "-")
        if have_centred:
            cen = [o["centred"] for o in runs if o.get("centred") is not None]
            cells.append(_pct(statistics.mean(cen)) if cen else "-")
        cells += [_pct(statistics.mean(accs)), " / ".join(_pct(a) for a in accs),
                  f"{100 * (statistics.mean(accs) - zs):+.1f}",
                  f"{100 * min(o['accuracy'] - o['zero_shot'] for o in runs):+.1f}"]
        if have_rho:
            rho = r["spearman"]
            cells.append("-" if rho is None else f"{rho:+.2f} ({r['scored_points']})")
        if have_kept:
            cells.append(" / ".join(_kept_short(o["kept"]) for o in runs))
        cells.append(f"{statistics.mean(o['seconds'] for o in runs):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    ablation = [(r, a) for r in results for a in r.get("ablation", [])]
    if ablation:
        lines += ["", "| set | variant (demo settings) | top-1 (mean of seeds) | per seed "
                  "| vs zero-shot |", "|---|---|---|---|---|"]
        for r, a in ablation:
            zs = statistics.mean(o["zero_shot"] for o in r["runs"])
            mean = statistics.mean(a["accuracy"])
            lines.append(f"| {r['set']} | {a['variant']} | {_pct(mean)} | "
                         + " / ".join(_pct(x) for x in a["accuracy"])
                         + f" | {100 * (mean - zs):+.1f} |")
    return "\n".join(lines)


def parse_sets(text: str) -> list[str]:
    names: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in GROUPS:
            names += GROUPS[part]
        elif part in SETS:
            names.append(part)
        else:
            raise SystemExit(f"Unknown set {part!r}; use {', '.join(SETS)} or "
                             f"{', '.join(GROUPS)}.")
    return list(dict.fromkeys(names))


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a plain string, e.g. student_view=weak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--cache", type=Path, help="where built models are kept (default "
                   "<out>/cache)")
    p.add_argument("--sets", default="all", help="comma-separated set names or groups: "
                   + ", ".join(SETS) + "; " + ", ".join(GROUPS) + " (default all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--per-class", type=int, default=100,
                   help="sandbox target pictures per class (default 100)")
    p.add_argument("--flowers-per-class", type=int, default=0,
                   help="use only this many target photos per flower class (default: all)")
    p.add_argument("--flowers", type=Path, default=DEFAULT_FLOWERS,
                   help="the flowers5 photos, one folder per class (default ../shared/data/"
                   "flowers5 beside the repository)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a candidate default: a setting given to every run (repeatable)")
    p.add_argument("--ablation", action="store_true",
                   help="also run the loss ablation rows with the demo settings")
    p.add_argument("--resume", action="store_true",
                   help="keep the sets already in <out>/results.json that were measured with "
                   "the same seeds, sizes and settings; run only the others")
    args = p.parse_args(argv)
    # One thread: on a shared machine OpenMP's spinning threads make runs many times slower,
    # and one thread keeps runs comparable.
    torch.set_num_threads(1)
    out = args.out.resolve()
    cache = (args.cache or out / "cache").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, not {item!r}.")
        overrides[key] = parse_value(value)
    args.seed_list = list(range(args.seeds))
    names = parse_sets(args.sets)
    if "flowers" in names and not args.flowers.is_dir():
        log(f"skipping flowers: {args.flowers} not found (give --flowers DIR)")
        names.remove("flowers")
    t0 = time.perf_counter()
    done = previous_results(out, overrides, args) if args.resume else {}
    results = [done[n] for n in names if n in done]
    if done:
        log("kept from the previous run: " + ", ".join(r["set"] for r in results))
    for name in (n for n in names if n not in done):
        results.append(bench_set(SETS[name], out, cache, args, overrides))
        results.sort(key=lambda r: names.index(r["set"]))
        # Written after every set, so a long run that is stopped keeps what it measured.
        write_report(out, results, overrides, args, time.perf_counter() - t0)
    print(write_report(out, results, overrides, args, time.perf_counter() - t0))
    return 0


def previous_results(out: Path, overrides: dict, args) -> dict[str, dict]:
    """Sets in ``out``'s results.json measured the way this run would measure them."""
    path = out / "results.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    same = (doc.get("overrides") == overrides and doc.get("seeds") == args.seed_list
            and doc.get("per_class") == args.per_class
            and doc.get("flowers_per_class") == args.flowers_per_class
            and bool(doc.get("ablation")) == args.ablation)
    return {r["set"]: r for r in doc.get("sets", [])} if same else {}


def write_report(out: Path, results: list[dict], overrides: dict, args, seconds: float) -> str:
    label = "must train (no flags)" if not overrides else "must train " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in overrides.items())
    report = table(results, label)
    doc = {"overrides": overrides, "seeds": args.seed_list, "per_class": args.per_class,
           "flowers_per_class": args.flowers_per_class, "ablation": args.ablation,
           "torch": torch.__version__,
           "seconds": seconds, "sets": results}
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "table.md").write_text(report + "\n")
    return report


if __name__ == "__main__":
    sys.exit(main())

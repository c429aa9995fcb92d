"""Build the embedded demo: the tiny CLIP model and a folder of target-style pictures.

    python -m must_engine.sandbox.build_demo [--seed 0] [--out resources]

writes

    <out>/models/must-tiny-clip/   open_clip_config.json, open_clip_model.safetensors, README.md
    <out>/demo/images/             target-style pictures with neutral names (0001.png ...)
    <out>/demo/classes.txt         one class name a line
    <out>/demo/answer_key.csv      path,label (path relative to images/), kept out of images/
    <out>/demo/README.md           what the demo is, with the tiny CLIP's zero-shot accuracy

Every file is rebuilt bit for bit from the seed on a given machine (same library versions);
``--check`` builds twice into temporary folders and compares their sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from must_engine.sandbox import tiny_clip, world

MODEL_DIR = Path("models") / "must-tiny-clip"
DEMO_DIR = Path("demo")


@dataclass(frozen=True)
class DemoRecipe:
    """Sizes of everything the build makes; seeds are offsets from the build seed."""

    pretrain_per_class: int = 600
    demo_per_class: int = 40
    eval_per_class: int = 100
    pretrain: tiny_clip.PretrainSettings = tiny_clip.PretrainSettings()
    pretrain_split_seed: int = 1_000
    demo_split_seed: int = 2_000
    eval_split_seed: int = 3_000


@dataclass(frozen=True)
class DemoFigures:
    """Zero-shot top-1 accuracy of the built tiny CLIP (fractions, 0..1)."""

    source: float
    target: float
    demo: float
    logit_scale: float


def default_out() -> Path:
    """The repository's ``resources`` folder."""
    return Path(__file__).resolve().parents[2] / "resources"


def build(out: Path, seed: int = 0, recipe: DemoRecipe | None = None, log=print) -> DemoFigures:
    """Train the tiny CLIP, write the model and demo folders under ``out``; return figures."""
    recipe = recipe or DemoRecipe()
    out = Path(out)
    names = world.CLASS_NAMES

    log(f"rendering {recipe.pretrain_per_class * len(names)} source pictures for pretraining")
    train = world.make_split(
        recipe.pretrain_per_class, "source", seed + recipe.pretrain_split_seed
    )
    log("pretraining the tiny CLIP")
    model = tiny_clip.pretrain_tiny_clip(
        train, names, seed=seed, settings=recipe.pretrain, log=lambda m: log("  " + m)
    )
    del train

    model_dir = out / MODEL_DIR
    tiny_clip.save_local_dir(model, tiny_clip.tiny_clip_config(), model_dir)
    del model

    demo_dir = out / DEMO_DIR
    images_dir = demo_dir / "images"
    if images_dir.exists():
        # Stale pictures from an older build would break the answer key's one-to-one match.
        shutil.rmtree(images_dir)
    log(f"writing {recipe.demo_per_class * len(names)} target-style demo pictures")
    world.write_folder(
        images_dir,
        recipe.demo_per_class,
        "target",
        seed + recipe.demo_split_seed,
        by_class_subfolders=False,
        answer_key=demo_dir / "answer_key.csv",
    )
    _write(demo_dir / "classes.txt", "".join(n + "\n" for n in names))

    figures = measure(model_dir, demo_dir, seed, recipe)
    _write(model_dir / "README.md", _model_readme(figures, recipe, seed))
    _write(demo_dir / "README.md", _demo_readme(figures, recipe, seed))
    return figures


def measure(model_dir: Path, demo_dir: Path, seed: int, recipe: DemoRecipe) -> DemoFigures:
    """Zero-shot accuracy of the saved model, loaded the way any user model is loaded."""
    from PIL import Image

    names = world.CLASS_NAMES
    with tiny_clip.deterministic_torch(seed, recipe.pretrain.threads):
        model, preprocess, tokenizer = tiny_clip.load_local_dir(model_dir)
        acc = {}
        for style in ("source", "target"):
            split = world.make_split(recipe.eval_per_class, style, seed + recipe.eval_split_seed)
            acc[style] = tiny_clip.zero_shot_accuracy(model, tokenizer, preprocess, split, names)
        key = world.read_answer_key(demo_dir / "answer_key.csv")
        index = {n: i for i, n in enumerate(names)}
        demo = []
        for rel, label in sorted(key.items()):
            with Image.open(demo_dir / "images" / rel) as im:
                demo.append((im.convert("RGB"), index[label]))
        acc["demo"] = tiny_clip.zero_shot_accuracy(model, tokenizer, preprocess, demo, names)
        scale = float(model.logit_scale.detach().exp())
    return DemoFigures(acc["source"], acc["target"], acc["demo"], scale)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _model_readme(f: DemoFigures, r: DemoRecipe, seed: int) -> str:
    cfg = tiny_clip.tiny_clip_config()
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    return f"""# must-tiny-clip

A tiny CLIP image-text model made by the MUST Studio project, for offline demos and tests.
It is not a general-purpose model: it only knows the sandbox world's {len(world.CLASS_NAMES)}
shapes ({", ".join(world.CLASS_NAMES)}).

- Architecture: open_clip ViT, {v["image_size"]}x{v["image_size"]} pixels, patch {v["patch_size"]},
  {v["layers"]} layers of width {v["width"]}; text tower {t["layers"]} layers of width {t["width"]},
  open_clip's default tokenizer; embedding size {cfg["embed_dim"]}. Weights stored in float16.
- Training: CLIP contrastive loss from random initialisation on {r.pretrain_per_class} source-style
  sandbox pictures per class with prompt captions, {r.pretrain.epochs} epochs, seed {seed};
  random {r.pretrain.mask_block}-pixel blocks of each picture (up to
  {r.pretrain.mask_ratio_max:.0%}) had their patch embeddings blanked, so that, like large
  CLIPs, it tolerates the masked views of masked self-training.
  Learned logit scale: {f.logit_scale:.2f}.
- Zero-shot top-1 (prompt templates averaged): source style {_pct(f.source)},
  target style {_pct(f.target)} ({r.eval_per_class} pictures per class each).
- Load it like any open_clip checkpoint:
  `open_clip.create_model_and_transforms("local-dir:<this folder>")`.
- Rebuild it bit for bit: `python -m must_engine.sandbox.build_demo --seed {seed}`.

Licence: made by the MUST Studio project from data the project renders itself; distributed
under the project's licence (BSD-3-Clause).
"""


def _demo_readme(f: DemoFigures, r: DemoRecipe, seed: int) -> str:
    n = r.demo_per_class * len(world.CLASS_NAMES)
    templates = "\n".join(f"- `{t}`" for t in tiny_clip.ZERO_SHOT_TEMPLATES)
    return f"""# MUST Studio demo

{n} unlabelled pictures (`images/`) of {len(world.CLASS_NAMES)} shapes, drawn by the project's
sandbox world in its *target* style: striped, checked and blotchy backgrounds and fills,
more clutter, low contrast, blur and noise. The demo model
(`../models/must-tiny-clip/`) was pretrained only on the *source* style: bright flat shapes
on plain backgrounds. Adapting it to these pictures without labels is what MUST is for.

- `classes.txt`: the class names, one a line.
- `answer_key.csv`: the true class of every picture (`path` relative to `images/`). It is
  kept outside `images/` and is used only to score the result, never for training.

Zero-shot top-1 accuracy of the demo model, before any adaptation (prompt templates below,
averaged):

| pictures | accuracy |
|---|---|
| source style, {r.eval_per_class} per class, freshly rendered | {_pct(f.source)} |
| target style, {r.eval_per_class} per class, freshly rendered | {_pct(f.target)} |
| these {n} demo pictures | {_pct(f.demo)} |

Chance is {_pct(1 / len(world.CLASS_NAMES))}.

Prompt templates:
{templates}

Rebuild everything here bit for bit: `python -m must_engine.sandbox.build_demo --seed {seed}`.
Made by the MUST Studio project; licence BSD-3-Clause.
"""


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m must_engine.sandbox.build_demo",
        description="Build the tiny CLIP model and the offline demo pictures.",
    )
    parser.add_argument("--seed", type=int, default=0, help="build seed (default 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="resources folder to write into (default: the repository's)")
    parser.add_argument("--check", action="store_true",
                        help="build twice in temporary folders and compare every file's sha256")
    args = parser.parse_args(argv)

    if args.check:
        hashes = []
        for attempt in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                build(Path(tmp), args.seed, log=lambda m: None)
                print(f"build {attempt}: {time.perf_counter() - start:.0f} s")
                hashes.append(tree_hashes(Path(tmp)))
        same = hashes[0] == hashes[1]
        print(f"{len(hashes[0])} files, " + ("identical" if same else "DIFFERENT") + " sha256")
        return 0 if same else 1

    out = args.out or default_out()
    start = time.perf_counter()
    f = build(out, args.seed)
    print(f"zero-shot top-1: source {_pct(f.source)}, target {_pct(f.target)}, "
          f"demo pictures {_pct(f.demo)} (chance {_pct(1 / len(world.CLASS_NAMES))}); "
          f"logit scale {f.logit_scale:.2f}")
    print(f"model {tree_size(out / MODEL_DIR) / 1e6:.1f} MB, "
          f"demo images {tree_size(out / DEMO_DIR / 'images') / 1e6:.1f} MB; "
          f"built in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

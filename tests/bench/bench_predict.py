"""Benchmark 3: `must predict` against a plain open_clip loop, cold and warm image cache.

The plain loop is what a user would write: open_clip's own model and preprocess (full
decode, resize, centre crop, normalise), batches of 64, image embeddings against the class
prototypes, softmax. `must predict` (``predict_run``, what the command calls) scores the
same 200 photos of 12 megapixels with the same model, input size and batch, first with an
empty decoded-image cache, then with it filled. Same process; the plain loop runs before and
after and its mean is the reference. Targets: >= 1.0x cold, >= 2x warm.

    python tests/bench/bench_predict.py --data /tmp/must-speed [--photos DIR] [--no-vit]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_data import (  # noqa: E402
    CLASSES,
    add_data_args,
    one_thread,
    photos_12mp,
    tiny_clip,
    vit_b32,
)

COLD_TARGET = 1.0
WARM_TARGET = 2.0
BATCH = 64


def plain_open_clip(model_dir: Path, files: list[Path], classifier) -> float:
    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image

    t0 = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + str(model_dir))
    model.eval()
    with torch.no_grad():
        for start in range(0, len(files), BATCH):
            x = torch.stack([preprocess(Image.open(f).convert("RGB"))
                             for f in files[start:start + BATCH]])
            emb = F.normalize(model.encode_image(x), dim=-1)
            (100.0 * emb @ classifier).softmax(dim=-1)
    return time.perf_counter() - t0


def must_predict(run_dir: Path, folder: Path, files: list[Path], cache: Path) -> float:
    from must_engine.predict import predict_run

    t0 = time.perf_counter()
    # reuse=False: the warm run measures the decoded-image cache, not the kept predictions
    preds = predict_run(run_dir, folder, files=[f.name for f in files], device="cpu",
                        batch_size=BATCH, image_cache=str(cache), reuse=False)
    elapsed = time.perf_counter() - t0
    assert len(preds) > 0 and not preds.failed
    return elapsed


def compare(name: str, model_dir: Path, folder: Path, limit: int) -> None:
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import prepare_run
    from must_engine.weights import load_model_weights

    files = sorted(folder.glob("*.jpg"))[:limit]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        job = TrainJob(folder, CLASSES, ModelSpec.parse(str(model_dir)), ["a photo of a {}."],
                       overrides={"image_cache": "off"})
        run = prepare_run(job, run_dir, device="cpu")
        from must_engine.models.must_model import must_model_from_config

        zero = must_model_from_config(run.architecture)
        load_model_weights(run_dir / "zero_shot.safetensors", zero)
        classifier = zero.classifier.detach()
        cache = Path(tmp) / "cache"
        plain_a = plain_open_clip(model_dir, files, classifier)
        cold = must_predict(run_dir, folder, files, cache)
        warm = must_predict(run_dir, folder, files, cache)
        plain_b = plain_open_clip(model_dir, files, classifier)
    plain = (plain_a + plain_b) / 2
    rc, rw = plain / cold, plain / warm
    print(f"{name}, {len(files)} photos of 12 MP, batch {BATCH}, CPU: plain open_clip loop "
          f"{plain_a:.1f} s / {plain_b:.1f} s, must predict cold {cold:.1f} s, warm {warm:.1f} s")
    print(f"  speed-up cold {rc:.2f}x (target >= {COLD_TARGET:.1f}x: "
          f"{'met' if rc >= COLD_TARGET else 'NOT met'}), warm {rw:.2f}x (target >= "
          f"{WARM_TARGET:.1f}x: {'met' if rw >= WARM_TARGET else 'NOT met'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    p.add_argument("--no-vit", action="store_true", help="tiny CLIP only")
    p.add_argument("--vit-images", type=int, default=64,
                   help="photos for the ViT-B-32 row (64 keeps a one-core CPU run short)")
    args = p.parse_args()
    one_thread()
    folder = photos_12mp(args.data, args.photos)
    compare("tiny CLIP (64 px)", tiny_clip(), folder, 200)
    if not args.no_vit:
        compare("ViT-B-32 (random weights, 224 px)", vit_b32(args.data), folder, args.vit_images)


if __name__ == "__main__":
    main()

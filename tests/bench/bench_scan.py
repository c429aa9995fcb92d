"""Benchmark 4: listing a folder of 100,000 images in nested folders, without decoding them.

The tree (made once under --data) holds 100 folders of 10 subfolders of 100 files each,
hard links to 200 real 256-px JPEGs, 20 of them damaged (truncated). `scan_folder(verify=
False)`, what `must predict` runs, lists it; files are checked when they are decoded, so
the damaged ones are reported then, with the reason: the bench decodes the first 5,000
files the way prediction does and prints what was skipped. For comparison, the verifying
scan (every file decoded cheaply) is timed on those 5,000 files. Target: the listing under
3 s.

    python tests/bench/bench_scan.py --data /tmp/must-speed [--photos DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_data import add_data_args, one_thread, photos_256  # noqa: E402

TARGET_S = 3.0
TOTAL = 100_000
DAMAGED = 20


def make_tree(data: Path, photos: Path) -> Path:
    root = data / "scan-100k"
    if (root / ".complete").exists():
        return root
    sources = sorted(photos.glob("*.jpg"))
    damaged_dir = data / "scan-damaged"
    damaged_dir.mkdir(parents=True, exist_ok=True)
    damaged = []
    for i in range(DAMAGED):
        blob = sources[i].read_bytes()
        target = damaged_dir / f"cut_{i}.jpg"
        target.write_bytes(blob[: len(blob) // 3])
        damaged.append(target)
    for i in range(TOTAL):
        folder = root / f"f{i // 1000:03d}" / f"s{(i // 100) % 10}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        # every 250th file is damaged, so the first 5,000 files hold 20 of them
        src = damaged[(i // 250) % DAMAGED] if i % 250 == 7 and i < 5000 else \
            sources[i % len(sources)]
        os.link(src, folder / f"img_{i:06d}.jpg")
    (root / ".complete").touch()
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(p)
    args = p.parse_args()
    one_thread()
    from must_engine.image_cache import ImageSource
    from must_engine.images import ImageLoadError, scan_folder, unreadable_reason

    root = make_tree(args.data, photos_256(args.data, args.photos))
    t0 = time.perf_counter()
    scan = scan_folder(root, verify=False)
    listing = time.perf_counter() - t0
    print(f"listing {len(scan.files):,} files in {len({f.rsplit('/', 1)[0] for f in scan.files})}"
          f" nested folders: {listing:.2f} s (target < {TARGET_S:.0f} s: "
          f"{'met' if listing < TARGET_S else 'NOT met'}; ratio to target "
          f"{listing / TARGET_S:.2f})")

    first = [root / f for f in scan.files[:5000]]
    source = ImageSource(224)  # what the views decode to, no cache
    skipped = []
    t0 = time.perf_counter()
    for path in first:
        try:
            source.load(path)
        except ImageLoadError as exc:
            skipped.append((path.relative_to(root).as_posix(), exc.reason))
    lazy = time.perf_counter() - t0
    print(f"decoding the first {len(first):,} as prediction does: {lazy:.1f} s, "
          f"{len(skipped)} skipped when found, e.g. {skipped[:2]}")
    t0 = time.perf_counter()
    reasons = [unreadable_reason(path) for path in first]
    verify = time.perf_counter() - t0
    print(f"the verifying scan's check of the same {len(first):,}: {verify:.1f} s "
          f"({sum(r is not None for r in reasons)} unreadable); over {TOTAL:,} files that is "
          f"~{verify * TOTAL / len(first):.0f} s on one core before training could start")


if __name__ == "__main__":
    main()

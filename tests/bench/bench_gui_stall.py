"""How long does the GUI event loop stall while the results grid scrolls over 20,000 images?

Not a test (run it by hand):

    python tests/bench/bench_gui_stall.py                 # offscreen, 20,000 images
    xvfb-run -s "-screen 0 1400x900x24" python tests/bench/bench_gui_stall.py --platform xcb

A 5 ms QTimer records when it fires; a stall is the gap between two ticks. The grid is
scrolled programmatically (steady wheel-like steps, page jumps, scroll-bar drags) while
thumbnails decode in the background, then filters are changed. The goal (issue 5) is a
longest stall under 100 ms.

It also prints the process's resident memory after each phase and its growth from the
empty page (issue 15's target: under 300 MB over 20,000 images).

The images are a few hundred real JPEG photos (1024x768, noise and shapes) hard-linked
under 20,000 distinct names, so every row decodes a real file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ["cat", "dog", "bird", "car", "tree", "boat", "house", "flower"]


def make_photos(root: Path, distinct: int, total: int, seed: int = 0) -> list[str]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    src = root / "src"
    src.mkdir(parents=True)
    for i in range(distinct):
        base = rng.integers(0, 255, size=(3,))
        noise = rng.normal(0, 40, size=(96, 128, 3)) + base
        im = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8), "RGB").resize(
            (1024, 768), Image.Resampling.BILINEAR)
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.integers(0, 900), rng.integers(0, 650)
            r = int(rng.integers(30, 160))
            d.ellipse([x, y, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        im.save(src / f"photo_{i:04d}.jpg", quality=88)
    names = []
    for i in range(total):
        folder = root / "images" / f"{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        rel = f"images/{i // 1000:02d}/img_{i:05d}.jpg"
        os.link(src / f"photo_{i % distinct:04d}.jpg", root / rel)
        names.append(rel)
    return names


def make_predictions(root: Path, files: list[str], seed: int = 0):
    from must_engine.predict import Predictions

    rng = np.random.default_rng(seed)
    n, c = len(files), len(CLASSES)

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    zero = softmax(rng.normal(0, 2.0, (n, c)))
    after = softmax(np.log(zero + 1e-6) * 1.5 + rng.normal(0, 1.0, (n, c)))
    return Predictions(root, files, list(CLASSES), zero, after)


class StallMeter:
    """Gaps between ticks of a 5 ms timer: how long the event loop was busy elsewhere."""

    def __init__(self, interval_ms: int = 5) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.gaps: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now - self._last) * 1000)
        self._last = now

    def start(self) -> None:
        self.gaps, self._last = [], None
        self.timer.start()

    def stop(self) -> tuple[float, float, int]:
        self.timer.stop()
        g = np.array(self.gaps or [0.0])
        return float(g.max()), float(np.percentile(g, 95)), len(self.gaps)


def rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


MEMORY_TARGET_MB = 300


def run_for(app, seconds: float, step=None, every_ms: int = 16) -> None:
    """Spin the event loop for `seconds`, calling step() every `every_ms`."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    driver = QTimer()
    if step is not None:
        driver.setInterval(every_ms)
        driver.timeout.connect(step)
        driver.start()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    driver.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--distinct", type=int, default=300, help="real JPEG files behind them")
    ap.add_argument("--seconds", type=float, default=8.0, help="per scrolling phase")
    ap.add_argument("--platform", default=None, help="Qt platform (default offscreen)")
    ap.add_argument("--disk-cache", action="store_true", help="use the disk thumbnail cache")
    ap.add_argument("--screenshot", default=None, help="save a PNG of the page at the end")
    args = ap.parse_args()

    os.environ["QT_QPA_PLATFORM"] = args.platform or os.environ.get("QT_QPA_PLATFORM",
                                                                     "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="must-bench-"))
    os.environ.setdefault("MUST_STUDIO_CACHE_DIR", str(tmp / "cache"))
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from must_gui.app import preload_engine
    from must_gui.pyside_fix import protect_singletons
    from must_gui.results import ResultsPage

    protect_singletons()  # see pyside_fix: PySide6 6.12 on Python 3.11
    from slow_gc import SlowCollections  # beside this script

    from must_gui.results.thumbnail_cache import ThumbnailCache

    # As the app does at start-up: import the engine and freeze the objects alive then, so
    # full garbage collections skip them. Without this a collection here took up to 213 ms.
    preload_engine()
    slow_gc = SlowCollections().install()

    t0 = time.perf_counter()
    files = make_photos(tmp / "data", args.distinct, args.images)
    pred = make_predictions(tmp / "data", files)
    print(f"made {args.images} images ({args.distinct} distinct JPEGs) in "
          f"{time.perf_counter() - t0:.1f}s under {tmp}")

    cache = ThumbnailCache(disk_cache=args.disk_cache)
    page = ResultsPage(thumbnail_cache=cache)
    page.resize(1400, 900)
    page.show()
    # The page's first show (style, layout) is the app's to pay once, while a run trains
    # (bench_gui_training_stall.py measures it); this measures loading 20,000 results.
    run_for(app, 0.5)
    meter = StallMeter()

    results: list[tuple[str, float, float, int, int]] = []
    memory: list[tuple[str, float]] = [("page shown, no results", rss_mb())]

    def phase(name: str, seconds: float, step=None, every_ms: int = 16) -> None:
        delivered = cache.delivered
        meter.start()
        run_for(app, seconds, step, every_ms)
        worst, p95, ticks = meter.stop()
        results.append((name, worst, p95, ticks, cache.delivered - delivered))
        memory.append((name, rss_mb()))

    meter.start()
    t = time.perf_counter()
    page.set_results(pred, None)
    app.processEvents()
    set_ms = (time.perf_counter() - t) * 1000
    run_for(app, 1.0)
    worst, p95, ticks = meter.stop()
    results.append(("set_results + first screen", max(worst, set_ms), p95, ticks,
                    cache.delivered))
    memory.append(("set_results + first screen", rss_mb()))

    grid = page.grid
    bar = grid.verticalScrollBar()
    cell_h = grid.gridSize().height()

    def steady():
        # About two screens a second: a brisk mouse-wheel scroll.
        bar.setValue(min(bar.maximum(), bar.value() + cell_h // 3))

    phase("steady scroll (wheel-like)", args.seconds, steady)

    def pages():
        bar.setValue(min(bar.maximum(), bar.value() + bar.pageStep()))

    phase("page-down every 100 ms", args.seconds / 2, pages, 100)

    rng = np.random.default_rng(1)

    def drag():
        bar.setValue(int(rng.integers(0, bar.maximum() + 1)))

    phase("scroll-bar drag, random jumps every 33 ms", args.seconds / 2, drag, 33)

    state = {"i": 0}

    def filters():
        # One change per tick, as a person makes them: a class key, or the checkbox.
        i = state["i"] = state["i"] + 1
        if i % 3 == 0:
            page.changed_check.setChecked(not page.changed_check.isChecked())
        else:
            page.pick_class_by_number(i % (len(CLASSES) + 1))

    phase("filter changes every 300 ms", args.seconds / 2, filters, 300)

    def sorts():
        page.sort_combo.setCurrentIndex((page.sort_combo.currentIndex() + 1)
                                        % page.sort_combo.count())

    page.pick_class_by_number(0)
    page.changed_check.setChecked(False)
    phase("sort changes every 300 ms", args.seconds / 2, sorts, 300)

    if args.screenshot:
        page.grab().save(args.screenshot)
    cache.shutdown()

    print(f"\nQt platform: {app.platformName()}, CPUs: {os.cpu_count()}, "
          f"thumbnail workers: {cache._pool.maxThreadCount()}, disk cache: {args.disk_cache}")
    print(f"{'phase':44s} {'max ms':>8s} {'p95 ms':>8s} {'ticks':>7s} {'thumbs':>7s}")
    for name, worst, p95, ticks, thumbs in results:
        print(f"{name:44s} {worst:8.1f} {p95:8.1f} {ticks:7d} {thumbs:7d}")
    overall = max(r[1] for r in results[1:])
    print(f"\nlongest stall while scrolling/filtering: {overall:.1f} ms "
          f"({'under' if overall < 100 else 'OVER'} the 100 ms goal)")
    print(f"\n{'memory after':44s} {'RSS MB':>8s}")
    for name, mb in memory:
        print(f"{name:44s} {mb:8.0f}")
    growth = max(mb for _, mb in memory) - memory[0][1]
    scrolling = max(mb for _, mb in memory[2:]) - memory[1][1]
    print(f"memory growth from the empty page: {growth:.0f} MB, of which scrolling, filtering "
          f"and sorting {scrolling:.0f} MB (target < {MEMORY_TARGET_MB} MB: "
          f"{'met' if growth < MEMORY_TARGET_MB else 'NOT met'})")
    slow = [round(ms) for _t, _gen, ms in slow_gc.seen]
    print(f"garbage collections over 20 ms: {slow or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the app icon's PNG, ICO and ICNS files from its SVG.

Usage (from the repository root):

    python packaging/make_icons.py            # writes into resources/icons/
    python packaging/make_icons.py --out DIR  # writes somewhere else

Needs PySide6 (QtSvg is part of PySide6-Essentials) and Pillow; runs without a display.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SVG = REPO_ROOT / "resources" / "icons" / "must-studio.svg"
DEFAULT_OUT = REPO_ROOT / "resources" / "icons"
ICON_NAME = "must-studio"

PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
# Windows shows 16-256; 24 and 48 are used by Explorer and the taskbar.
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# ICNS holds 16-1024; Pillow picks the exact size from the images we hand it.
ICNS_EXTRA_SIZE = 1024


def render_svg(svg_path: Path, sizes: tuple[int, ...]) -> dict[int, bytes]:
    """Render the SVG at each size; returns PNG bytes keyed by edge length in pixels."""
    # Offscreen so that this runs on build machines and CI with no display.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (keeps Qt alive)
    renderer = QSvgRenderer(str(svg_path))
    if not renderer.isValid():
        raise SystemExit(f"Cannot read {svg_path} as SVG; check that the file is valid SVG.")

    rendered: dict[int, bytes] = {}
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        renderer.render(painter)
        painter.end()

        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        image.save(buffer, "PNG")
        buffer.close()
        rendered[size] = bytes(data.data())
    return rendered


def write_icons(svg_path: Path, out_dir: Path) -> list[Path]:
    """Write every PNG size, a multi-size .ico and an .icns; returns the paths written."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = render_svg(svg_path, tuple(sorted(set(PNG_SIZES) | {ICNS_EXTRA_SIZE})))
    images = {size: Image.open(io.BytesIO(data)).convert("RGBA") for size, data in pngs.items()}
    written: list[Path] = []

    for size in PNG_SIZES:
        path = out_dir / f"{ICON_NAME}-{size}.png"
        path.write_bytes(pngs[size])
        written.append(path)

    # Each size comes from its own rendering, not a downscale of the largest one, so the
    # small sizes keep the pixel-aligned edges drawn into the SVG.
    ico_path = out_dir / f"{ICON_NAME}.ico"
    largest_ico = images[max(ICO_SIZES)]
    largest_ico.save(
        ico_path,
        format="ICO",
        sizes=[(s, s) for s in ICO_SIZES],
        append_images=[images[s] for s in ICO_SIZES if s != max(ICO_SIZES)],
    )
    written.append(ico_path)

    icns_path = out_dir / f"{ICON_NAME}.icns"
    images[ICNS_EXTRA_SIZE].save(
        icns_path,
        format="ICNS",
        append_images=[images[s] for s in sorted(images) if s != ICNS_EXTRA_SIZE],
    )
    written.append(icns_path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=DEFAULT_SVG, help="source SVG")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write into")
    args = parser.parse_args(argv)
    if not args.svg.is_file():
        print(f"No SVG at {args.svg}; pass its path with --svg.", file=sys.stderr)
        return 2
    for path in write_icons(args.svg, args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

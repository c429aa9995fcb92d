"""A small made-up world of labelled shape pictures, rendered deterministically from a seed.

Each picture holds one shape of a known class, with random pose, size, position and colour,
on a background with some clutter. A *style* says how the picture is drawn: the ``source``
style (flat colours, plain backgrounds) is what the project's tiny CLIP is pretrained on;
the shifted styles keep the same shapes but change their low-level look (palette, texture,
blur, noise), so that an unsupervised method has something to adapt to.

Only numpy and Pillow are used, so the same seed gives the same pixels on every machine
that has the same library versions.
"""

from __future__ import annotations

import colorsys
import csv
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "moon",
    "arrow",
    "ring",
    "house",
)

# Shapes are drawn at this multiple of the output size, then downsampled, for smooth edges.
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class StyleSpec:
    """How a picture is drawn. Ranges are (low, high), sampled uniformly.

    Every picture draws one *severity* in ``severity``; the look effects (textures, blur,
    noise, contrast loss) are given at severity 1 and scale with it. A target set thus runs
    from milder to heavily disturbed pictures, as real photo collections do, and the milder
    ones give a self-training method a foothold.
    """

    name: str
    severity: tuple[float, float]
    # Chance, at severity 1, that the background is a two-colour texture (stripes, checks or
    # blotches); otherwise it is flat or a gradient, half and half.
    background_texture_p: float
    # Chance, at severity 1, that the shape is filled with a texture instead of flat colour.
    fill_texture_p: float
    # How far (RGB, 0..1) a texture's second colour may stray from its first, at severity 1.
    texture_amplitude: float
    # Saturation and value ranges (HSV, 0..1) of the shape and the background colours.
    shape_saturation: tuple[float, float]
    shape_value: tuple[float, float]
    background_saturation: tuple[float, float]
    background_value: tuple[float, float]
    # Least distance (RGB, 0..1 per channel, Euclidean) between shape and background colour.
    min_contrast: float
    clutter_count: tuple[int, int]
    blur_radius: tuple[float, float]  # in output pixels, at severity 1
    noise_std: tuple[float, float]  # Gaussian pixel noise (0..255 units), at severity 1
    contrast_loss: tuple[float, float]  # fraction pulled toward mid grey, at severity 1
    # Looks of the extra target styles. Their defaults switch them off and then draw no random
    # numbers, so the source and target pictures (and the shipped demo) stay bit-identical.
    # Shape drawn as an outline this wide (a fraction of the picture), not filled; 0 = filled.
    outline_width: tuple[float, float] = (0.0, 0.0)
    desaturation: tuple[float, float] = (0.0, 0.0)  # fraction of colour removed, at severity 1
    # A colour cast: the picture is tinted toward a colour of hue in ``cast_hue`` (0..1).
    cast_hue: tuple[float, float] = (0.0, 0.0)
    cast_strength: tuple[float, float] = (0.0, 0.0)  # at severity 1
    fade: tuple[float, float] = (0.0, 0.0)  # fraction pulled toward a washed-out light grey


# Bright flat shapes on light, plain backgrounds: the pretraining world.
SOURCE_STYLE = StyleSpec(
    name="source",
    severity=(0.0, 0.0),
    background_texture_p=0.0,
    fill_texture_p=0.0,
    texture_amplitude=0.0,
    shape_saturation=(0.55, 1.0),
    shape_value=(0.45, 0.95),
    background_saturation=(0.0, 0.3),
    background_value=(0.75, 1.0),
    min_contrast=0.45,
    clutter_count=(0, 3),
    blur_radius=(0.0, 0.0),
    noise_std=(0.0, 0.0),
    contrast_loss=(0.0, 0.0),
)

# Look effects of a shifted style at severity 1.
_SHIFTED_LOOK = dict(
    background_texture_p=1.0,
    fill_texture_p=0.6,
    texture_amplitude=0.35,
    clutter_count=(1, 5),
    blur_radius=(0.6, 1.2),
    noise_std=(10.0, 20.0),
    contrast_loss=(0.2, 0.45),
)
# A muted palette with dark backgrounds, mixed in by ``palette``.
_SHIFTED_PALETTE = dict(
    shape_saturation=(0.2, 0.8),
    shape_value=(0.2, 0.9),
    background_saturation=(0.1, 0.8),
    background_value=(0.15, 0.85),
    min_contrast=0.3,
)


def _lerp(a, b, t: float):
    if isinstance(a, tuple):
        return tuple(_lerp(x, y, t) for x, y in zip(a, b, strict=True))
    if isinstance(a, int) and isinstance(b, int):
        return int(round(a + (b - a) * t))
    return float(a + (b - a) * t)


def shifted_style(
    severity: tuple[float, float] = (0.0, 1.0),
    palette: float = 0.0,
    name: str = "shifted",
) -> StyleSpec:
    """A shifted style: same shapes, poses and sizes as the source, another low-level look.

    ``severity`` is the range each picture's severity is drawn from (0 = source look,
    1 = fully textured, blurred, noisy and low in contrast); ``palette`` (0..1) moves the
    colours of every picture toward a muted palette with dark backgrounds.
    """
    lo, hi = severity
    if not (0.0 <= lo <= hi <= 1.0 and 0.0 <= palette <= 1.0):
        raise ValueError("Severity must be a range within 0..1 and palette between 0 and 1.")
    fields = dict(_SHIFTED_LOOK)
    fields.update(
        {k: _lerp(getattr(SOURCE_STYLE, k), v, palette) for k, v in _SHIFTED_PALETTE.items()}
    )
    return replace(SOURCE_STYLE, name=name, severity=(float(lo), float(hi)), **fields)


STYLES: dict[str, StyleSpec] = {
    "source": SOURCE_STYLE,
    # Tuned on the tiny CLIP (measured figures: resources/demo/README.md). Severities from 0
    # left it at ~65% with little for self-training to gain; all at 1 gave ~40%. A dark,
    # muted palette hurt more than textures (~20-30%) and erased the class structure of the
    # features (a linear probe on them did no better), leaving nothing to adapt from.
    "target": shifted_style(severity=(0.8, 1.0), palette=0.0, name="target"),
    # Extra shifts for benchmarking defaults (tests/bench/bench_adaptation.py says which are
    # for choosing defaults and which are held out). Each changes one kind of look.
    # Colour cast and fade: an old print, warm-tinted, washed out, a little soft.
    "faded": replace(
        SOURCE_STYLE, name="faded", severity=(0.8, 1.0), clutter_count=(1, 4),
        desaturation=(0.5, 0.8), cast_hue=(0.05, 0.12), cast_strength=(0.4, 0.6),
        fade=(0.3, 0.5), blur_radius=(0.3, 0.8), noise_std=(3.0, 8.0),
    ),
    # Outline drawings: dark pencil strokes on grainy paper, no filled shapes.
    "sketch": replace(
        SOURCE_STYLE, name="sketch", severity=(0.8, 1.0), outline_width=(0.025, 0.05),
        shape_saturation=(0.0, 0.3), shape_value=(0.05, 0.4),
        background_saturation=(0.0, 0.15), background_value=(0.8, 1.0),
        background_texture_p=0.6, texture_amplitude=0.08, clutter_count=(2, 6),
        desaturation=(0.6, 1.0), blur_radius=(0.2, 0.6), noise_std=(4.0, 10.0),
    ),
    # Heavy noise and blur over the source look (no new textures or colours).
    "noisy-blur": replace(
        SOURCE_STYLE, name="noisy-blur", severity=(0.8, 1.0), clutter_count=(0, 4),
        blur_radius=(1.3, 2.0), noise_std=(25.0, 40.0), contrast_loss=(0.1, 0.3),
    ),
    # A pastel palette with textured backgrounds and fills: pale shapes, low contrast.
    "pastel": replace(
        SOURCE_STYLE, name="pastel", severity=(0.8, 1.0),
        shape_saturation=(0.25, 0.6), shape_value=(0.75, 1.0),
        background_saturation=(0.1, 0.45), background_value=(0.6, 0.95), min_contrast=0.4,
        background_texture_p=1.0, fill_texture_p=0.3, texture_amplitude=0.2,
        clutter_count=(1, 5), blur_radius=(0.3, 0.6), noise_std=(4.0, 8.0),
    ),
}


def style_names() -> tuple[str, ...]:
    """The names accepted by :func:`render`, source style first."""
    return tuple(STYLES)


def _style(style: str | StyleSpec) -> StyleSpec:
    if isinstance(style, StyleSpec):
        return style
    try:
        return STYLES[style]
    except KeyError:
        raise ValueError(
            f"Unknown sandbox style {style!r}; use one of: {', '.join(STYLES)}."
        ) from None


# ---------------------------------------------------------------------------------------
# Colours


def _hsv(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    h = rng.uniform(0.0, 1.0)
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _colour_pair(rng: np.random.Generator, spec: StyleSpec) -> tuple[np.ndarray, np.ndarray]:
    """A background and a shape colour at least ``min_contrast`` apart."""
    bg = _hsv(rng, spec.background_saturation, spec.background_value)
    fg = _hsv(rng, spec.shape_saturation, spec.shape_value)
    # Bounded retries keep the draw count (and so the stream of random numbers) finite.
    for _ in range(50):
        if np.linalg.norm(fg - bg) >= spec.min_contrast:
            break
        fg = _hsv(rng, spec.shape_saturation, spec.shape_value)
    else:
        fg = np.where(bg > 0.5, 0.0, 1.0) * 0.8 + fg * 0.2
    return bg, fg


def _to_u8(rgb: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(round(float(x) * 255)) for x in np.clip(rgb, 0.0, 1.0))
    return r, g, b


def _jitter_colour(rng: np.random.Generator, rgb: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(rgb + rng.uniform(-amount, amount, size=3), 0.0, 1.0)


# ---------------------------------------------------------------------------------------
# Fields: whole-canvas float images (H, W, 3) in 0..1


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(ax, ax)  # x, y


def _texture(rng: np.random.Generator, size: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Two colours laid out as stripes, checks or smooth blotches."""
    kind = rng.integers(0, 3)
    x, y = _grid(size)
    if kind == 0:  # stripes at a random angle
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.06, 0.2)
        u = x * math.cos(angle) + y * math.sin(angle)
        t = (np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi)) > 0).astype(float)
    elif kind == 1:  # checks, slightly rotated
        angle = rng.uniform(0, math.pi / 2)
        period = rng.uniform(0.08, 0.2)
        u = x * math.cos(angle) + y * math.sin(angle)
        v = -x * math.sin(angle) + y * math.cos(angle)
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(float)
    else:  # blotches: coarse random grid, smoothly enlarged
        cells = int(rng.integers(3, 7))
        coarse = rng.uniform(0, 1, size=(cells, cells))
        img = Image.fromarray((coarse * 255).astype(np.uint8), mode="L")
        t = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float64)
        t = np.clip((t / 255.0 - 0.5) * 2.5 + 0.5, 0, 1)
    t = t[..., None]
    return c0 * (1 - t) + c1 * t


def _field(rng: np.random.Generator, kind: str, size: int, base: np.ndarray,
           amplitude: float = 0.0) -> np.ndarray:
    if kind == "flat":
        return np.broadcast_to(base, (size, size, 3)).copy()
    if kind == "gradient":
        other = _jitter_colour(rng, base, 0.15)
        angle = rng.uniform(0, 2 * math.pi)
        x, y = _grid(size)
        t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle) + 0.5
        t = np.clip(t, 0.0, 1.0)[..., None]
        return base * (1 - t) + other * t
    if kind == "texture":
        # The second colour stays near the first so the shape still stands out.
        other = _jitter_colour(rng, base, amplitude)
        return _texture(rng, size, base, other)
    raise ValueError(f"Unknown field kind {kind!r}.")


def _field_u8(field: np.ndarray) -> np.ndarray:
    return np.round(np.clip(field, 0.0, 1.0) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Shapes: each draws a filled mask ("L" image) given centre, radius and rotation


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _polygon(draw: ImageDraw.ImageDraw, unit: np.ndarray, cx, cy, r, angle, fill=255):
    pts = _rotate(unit, angle) * r + np.array([cx, cy])
    draw.polygon([(float(px), float(py)) for px, py in pts], fill=fill)


def _regular(n: int, start: float = -math.pi / 2) -> np.ndarray:
    a = start + np.arange(n) * 2 * math.pi / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _shape_mask(name: str, size: int, cx, cy, r, angle, rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif name == "ring":
        inner = r * rng.uniform(0.5, 0.65)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif name == "moon":
        # A disc with an offset disc cut out of it.
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        off = r * rng.uniform(0.45, 0.65)
        ox, oy = cx + off * math.cos(angle), cy + off * math.sin(angle)
        rr = r * rng.uniform(0.85, 1.0)
        draw.ellipse((ox - rr, oy - rr, ox + rr, oy + rr), fill=0)
    elif name == "square":
        _polygon(draw, _regular(4, math.pi / 4) * 1.0, cx, cy, r, angle)
    elif name == "triangle":
        _polygon(draw, _regular(3) * 1.1 + np.array([0.0, 0.15]), cx, cy, r, angle)
    elif name == "star":
        inner = rng.uniform(0.38, 0.5)
        outer = _regular(5)
        inner_pts = _regular(5, -math.pi / 2 + math.pi / 5) * inner
        pts = np.empty((10, 2))
        pts[0::2], pts[1::2] = outer, inner_pts
        _polygon(draw, pts * 1.1, cx, cy, r, angle)
    elif name == "heart":
        t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
        hx = 16 * np.sin(t) ** 3
        hy = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([hx, hy + 2.5], axis=1) / 16.5
        _polygon(draw, pts, cx, cy, r, angle)
    elif name == "cross":
        w = rng.uniform(0.28, 0.38)
        pts = np.array(
            [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
             (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
        )
        _polygon(draw, pts * 0.95, cx, cy, r, angle)
    elif name == "arrow":
        shaft = rng.uniform(0.18, 0.26)
        head = rng.uniform(0.55, 0.7)
        neck = rng.uniform(0.0, 0.25)
        pts = np.array(
            [(-1, -shaft), (neck, -shaft), (neck, -head), (1, 0),
             (neck, head), (neck, shaft), (-1, shaft)]
        )
        _polygon(draw, pts, cx, cy, r, angle)
    elif name == "house":
        eave = rng.uniform(0.0, 0.15)
        pts = np.array(
            [(-0.7, 0.9), (0.7, 0.9), (0.7, -0.1), (0.7 + eave, -0.1), (0.0, -0.95),
             (-0.7 - eave, -0.1), (-0.7, -0.1)]
        )
        _polygon(draw, pts, cx, cy, r, angle)
    else:
        raise ValueError(f"Unknown shape {name!r}.")
    return mask


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int, count: int,
             spec: StyleSpec) -> None:
    """Thin lines, dots and arcs: things that are not any class."""
    for _ in range(count):
        colour = _to_u8(_hsv(rng, (0.0, 1.0), (0.1, 1.0)))
        kind = rng.integers(0, 3)
        x0, y0 = rng.uniform(0, size, size=2)
        if kind == 0:
            length = rng.uniform(0.1, 0.35) * size
            a = rng.uniform(0, 2 * math.pi)
            x1, y1 = x0 + length * math.cos(a), y0 + length * math.sin(a)
            width = max(1, int(rng.uniform(0.008, 0.02) * size))
            draw.line((float(x0), float(y0), float(x1), float(y1)), fill=colour, width=width)
        elif kind == 1:
            rad = rng.uniform(0.01, 0.03) * size
            draw.ellipse((x0 - rad, y0 - rad, x0 + rad, y0 + rad), fill=colour)
        else:
            rad = rng.uniform(0.05, 0.12) * size
            start = float(rng.uniform(0, 360))
            width = max(1, int(rng.uniform(0.008, 0.02) * size))
            draw.arc((x0 - rad, y0 - rad, x0 + rad, y0 + rad), start, start + 100.0,
                     fill=colour, width=width)


# ---------------------------------------------------------------------------------------
# Public API


def render(
    class_index: int,
    style: str | StyleSpec,
    rng: np.random.Generator,
    image_size: int = 64,
) -> Image.Image:
    """Draw one RGB picture of class ``CLASS_NAMES[class_index]`` in ``style``.

    Every random choice is taken from ``rng``, so the same generator state gives the same
    picture.
    """
    if not 0 <= class_index < len(CLASS_NAMES):
        raise ValueError(f"class_index must be in 0..{len(CLASS_NAMES) - 1}, got {class_index}.")
    spec = _style(style)
    size = image_size * _SUPERSAMPLE

    bg_colour, fg_colour = _colour_pair(rng, spec)
    sev = rng.uniform(*spec.severity)
    amp = spec.texture_amplitude * sev
    if rng.uniform() < spec.background_texture_p * sev:
        bg_kind = "texture"
    else:
        bg_kind = "gradient" if rng.uniform() < 0.5 else "flat"
    background = _field(rng, bg_kind, size, bg_colour, amp)
    fill_kind = "texture" if rng.uniform() < spec.fill_texture_p * sev else "flat"
    fill = _field(rng, fill_kind, size, fg_colour, amp)
    canvas = Image.fromarray(_field_u8(background), mode="RGB")

    # Clutter goes behind and in front of the shape, so the shape is never wholly clean.
    count = int(rng.integers(spec.clutter_count[0], spec.clutter_count[1] + 1))
    behind = int(rng.integers(0, count + 1))
    _clutter(rng, ImageDraw.Draw(canvas), size, behind, spec)

    r = rng.uniform(0.24, 0.4) * size
    margin = r * 1.15  # pointed shapes reach a little past r
    cx = rng.uniform(margin, size - margin)
    cy = rng.uniform(margin, size - margin)
    angle = rng.uniform(0, 2 * math.pi)
    mask = _shape_mask(CLASS_NAMES[class_index], size, cx, cy, r, angle, rng)
    if spec.outline_width[1] > 0:
        mask = _outline(mask, rng.uniform(*spec.outline_width) * size)
    fill_img = Image.fromarray(_field_u8(fill), mode="RGB")
    canvas = Image.composite(fill_img, canvas, mask)

    _clutter(rng, ImageDraw.Draw(canvas), size, count - behind, spec)

    img = canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)

    blur = sev * rng.uniform(*spec.blur_radius)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(blur)))
    arr = _colour_effects(np.asarray(img, dtype=np.float64), spec, sev, rng)
    loss = sev * rng.uniform(*spec.contrast_loss)
    if loss > 0:
        arr = (arr - 128.0) * (1.0 - loss) + 128.0
    noise = sev * rng.uniform(*spec.noise_std)
    if noise > 0:
        arr = arr + rng.normal(0.0, noise, size=arr.shape)
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), mode="RGB")


def _outline(mask: Image.Image, width: float) -> Image.Image:
    """The band of about ``width`` pixels along the edges of a filled mask."""
    k = 2 * max(1, int(round(width / 2))) + 1  # rank filters take odd sizes
    return ImageChops.subtract(mask.filter(ImageFilter.MaxFilter(k)),
                               mask.filter(ImageFilter.MinFilter(k)))


def _colour_effects(arr: np.ndarray, spec: StyleSpec, sev: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Desaturation, colour cast and fade of an RGB array (0..255 floats). An effect that
    is off draws nothing from ``rng``."""
    if spec.desaturation[1] > 0:
        amount = sev * rng.uniform(*spec.desaturation)
        grey = arr @ np.array([0.299, 0.587, 0.114])
        arr = arr * (1.0 - amount) + grey[..., None] * amount
    if spec.cast_strength[1] > 0:
        tint = np.array(colorsys.hsv_to_rgb(rng.uniform(*spec.cast_hue), 0.6, 1.0))
        amount = sev * rng.uniform(*spec.cast_strength)
        arr = arr * (1.0 - amount + amount * tint)
    if spec.fade[1] > 0:
        # Lifted blacks and dulled whites, as in a sun-faded print.
        amount = sev * rng.uniform(*spec.fade)
        arr = arr * (1.0 - amount) + 215.0 * amount
    return arr


def _style_key(style: str | StyleSpec) -> int:
    # A stable number per style name (Python's hash() is salted per process).
    return zlib.crc32(_style(style).name.encode("utf-8"))


def image_rng(seed: int, style: str | StyleSpec, class_index: int, index: int):
    """The generator for one picture; a picture does not depend on how many others are drawn."""
    return np.random.default_rng([int(seed), _style_key(style), int(class_index), int(index)])


def make_split(
    n_per_class: int,
    style: str | StyleSpec,
    seed: int,
    image_size: int = 64,
) -> list[tuple[Image.Image, int]]:
    """``n_per_class`` pictures of every class, as (image, class index), classes interleaved."""
    if n_per_class < 0:
        raise ValueError("n_per_class must be zero or more.")
    out = []
    for i in range(n_per_class):
        for c in range(len(CLASS_NAMES)):
            out.append((render(c, style, image_rng(seed, style, c, i), image_size), c))
    return out


def write_folder(
    root: str | os.PathLike,
    n_per_class: int,
    style: str | StyleSpec,
    seed: int,
    *,
    by_class_subfolders: bool,
    answer_key: str | os.PathLike | None = None,
    image_size: int = 64,
    image_format: str = "png",
) -> list[tuple[str, str]]:
    """Write a split to disk and return its (relative path, class name) rows.

    With ``by_class_subfolders`` the layout is ``root/<class>/0001.png``. Without, the
    pictures go flat into ``root`` with neutral, shuffled names (``0001.png`` ...), and the
    labels are written only to ``answer_key`` (CSV with columns ``path,label``; ``path``
    relative to ``root``), which must lie outside ``root`` so that nothing inside the folder
    gives the answers away.
    """
    root = Path(root)
    ext = image_format.lower().lstrip(".")
    if ext not in ("png", "jpg", "jpeg"):
        raise ValueError("image_format must be 'png' or 'jpg'.")
    if not by_class_subfolders:
        if answer_key is None:
            raise ValueError("A flat folder needs an answer_key path outside it for the labels.")
        key_path = Path(answer_key).resolve()
        if key_path.parent == root.resolve() or root.resolve() in key_path.parents:
            raise ValueError("Put the answer key outside the image folder, e.g. beside it.")
    root.mkdir(parents=True, exist_ok=True)

    items = make_split(n_per_class, style, seed, image_size)
    order = np.arange(len(items))
    if not by_class_subfolders:
        # Shuffle so that neither the names nor their order hint at the class.
        np.random.default_rng([int(seed), _style_key(style), 0xF11E]).shuffle(order)
    width = max(4, len(str(len(items))))
    rows: list[tuple[str, str]] = []
    counters = dict.fromkeys(CLASS_NAMES, 0)
    for n, k in enumerate(order, start=1):
        img, c = items[int(k)]
        name = CLASS_NAMES[c]
        if by_class_subfolders:
            counters[name] += 1
            rel = f"{name}/{counters[name]:0{width}d}.{ext}"
        else:
            rel = f"{n:0{width}d}.{ext}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(img, path, ext)
        rows.append((rel, name))
    if not by_class_subfolders:
        write_answer_key(answer_key, rows)
    return rows


def _save(img: Image.Image, path: Path, ext: str) -> None:
    # Fixed encoder settings and no metadata, so files are identical from run to run.
    if ext == "png":
        img.save(path, format="PNG", optimize=False, compress_level=9)
    else:
        img.save(path, format="JPEG", quality=90, optimize=False, subsampling=0)


def write_answer_key(path: str | os.PathLike, rows: Sequence[tuple[str, str]]) -> None:
    """Write ``path,label`` rows as CSV with Unix line ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("path", "label"))
        writer.writerows(rows)


def read_answer_key(path: str | os.PathLike) -> dict[str, str]:
    """The ``path -> label`` mapping of an answer key written by :func:`write_answer_key`."""
    with open(path, encoding="utf-8", newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}

"""Class names and prompt templates: parsing, checks, and the shipped template sets."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

from must_engine.shipped_data import shipped_file

# Longer names make unwieldy prompts and are cut in folder names (export/predictions_out.py).
MAX_CLASS_NAME_CHARS = 200


class ClassNameError(ValueError):
    """Class names a run cannot use, with one sentence saying what to fix."""


def parse_class_names(text: str) -> list[str]:
    """Names from pasted text: one a line, or separated by commas; blanks dropped."""
    parts = re.split(r"[\n,;\t]", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def read_class_file(path) -> list[str]:
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ClassNameError(f"Class file {p} was not found.")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ClassNameError(f"Class file {p} is not UTF-8 text (byte {exc.start}); save it as "
                             "plain text, one class name a line.") from exc
    return [" ".join(line.split()) for line in lines if line.strip() and not line.startswith("#")]


def _key(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).casefold()
    return re.sub(r"[\s_\-]+", " ", text).strip()


def _stem(key: str) -> str:
    for suffix in ("ies", "es", "s"):
        if key.endswith(suffix) and len(key) > len(suffix) + 2:
            return key[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return key


def _edit_distance_at_most_one(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = j = diffs = 0
    while i < len(a) and j < len(b):
        if a[i] != b[j]:
            diffs += 1
            if diffs > 1:
                return False
            if len(a) == len(b):
                i += 1
            j += 1
        else:
            i += 1
            j += 1
    return diffs + (len(b) - j) <= 1


@dataclass(frozen=True)
class ClassNameReport:
    duplicates: list[tuple[str, str]]  # same name up to case/spacing
    near_duplicates: list[tuple[str, str]]  # plural/singular or one letter apart

    @property
    def ok(self) -> bool:
        return not self.duplicates


def review_class_names(names: list[str]) -> ClassNameReport:
    dup: list[tuple[str, str]] = []
    near: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name in names:
        k = _key(name)
        if k in seen:
            dup.append((seen[k], name))
            continue
        for other_key, other in seen.items():
            if _stem(k) == _stem(other_key) or (
                min(len(k), len(other_key)) >= 4 and _edit_distance_at_most_one(k, other_key)
            ):
                near.append((other, name))
        seen[k] = name
    return ClassNameReport(dup, near)


def check_class_names(names: list[str]) -> list[str]:
    """Validate for a run; returns the names, raises ClassNameError on the first problem."""
    if len(names) < 2:
        raise ClassNameError("Give at least two class names (one a line, or comma-separated).")
    report = review_class_names(names)
    if report.duplicates:
        a, b = report.duplicates[0]
        raise ClassNameError(f"The class name '{b}' is given twice (also as '{a}'); "
                             "remove one of them.")
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise ClassNameError(f"The class name '{name[:40]}...' is {len(name)} characters "
                                 f"long; class names can have at most {MAX_CLASS_NAME_CHARS} "
                                 "characters.")
    return names


def template_sets() -> dict[str, list[str]]:
    data = json.loads(shipped_file("templates", "default.json").read_text(encoding="utf-8"))
    return data["sets"]


def default_template_set_name() -> str:
    data = json.loads(shipped_file("templates", "default.json").read_text(encoding="utf-8"))
    return data["default"]


def default_templates() -> list[str]:
    return template_sets()[default_template_set_name()]


def check_templates(templates: list[str]) -> list[str]:
    templates = [t for t in (t.strip() for t in templates) if t]
    if not templates:
        raise ClassNameError("Give at least one prompt template, such as 'a photo of a {}.'.")
    for t in templates:
        if t.count("{}") != 1:
            raise ClassNameError(f"The template '{t}' must contain '{{}}' exactly once, where the "
                                 "class name goes.")
        try:  # open_clip fills templates with str.format: any other {field} would fail there
            t.format("name")
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ClassNameError(f"The template '{t}' has a placeholder other than '{{}}' "
                                 f"({exc}); write literal braces as '{{{{' and '}}}}'.") from exc
    return templates

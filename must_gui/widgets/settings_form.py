"""Editors for MustSettings: a few plain knobs, and the rest under "Advanced" with the preset.

Each field shows the value the chosen preset gives; a field the user changes becomes an
*override* (its label turns bold) and is what the project saves. Overrides survive a
change of preset, so "60 epochs is too many" stays said.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDoubleValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from must_engine.settings import (
    ALIGN_CLS_GRADIENTS,
    KEEP_MODES,
    LABEL_FREE_RECIPE,
    PATCH_NORMS,
    PRECISIONS,
    PRESET_NAMES,
    PRESETS,
    PROTOTYPE_INITS,
    PUBLISHED_BEHAVIOUR,
    STUDENT_VIEWS,
    THRESHOLD_MODES,
    MustSettings,
)

PLAIN_FIELDS = ("epochs", "batch_size", "conf_threshold")
# Chosen elsewhere on the page (device picker, preset list), so not repeated as fields.
NOT_FIELDS = ("device", "preset")

LABELS: dict[str, str] = {
    "epochs": "Epochs", "batch_size": "Batch size", "conf_threshold": "Confidence threshold",
    "image_cache": "Decoded-image cache", "image_cache_gb": "Cache size (GB)",
    "base_lr": "Learning rate (per 256 images)", "min_lr": "Final learning rate (per 256)",
    "weight_decay": "Weight decay", "layer_decay": "Layer-wise lr decay",
    "ema_decay_init": "EMA decay, start", "ema_decay_final": "EMA decay, end",
    "ema_warm_it": "EMA warm-up steps (scaled)", "mask_ratio": "Mask ratio",
    "mask_patch_size": "Mask block (pixels, 0 = auto)", "w_fair": "Fairness weight",
    "w_mim": "Masked-image weight", "w_align": "Alignment weight",
    "use_fair": "Use the fairness loss", "use_mim": "Use masked image modelling",
    "use_align": "Use global-local alignment",
    "fair_running_average_classes": "Running class prior from (classes)",
    "patch_norm": "Patch-token LayerNorm", "align_cls_gradient": "Alignment [CLS] gradient",
    "student_view": "Student view", "randaugment": "RandAugment policy",
    "strong_scale_min": "Strong crop, smallest scale", "prototype_init": "Classifier start",
    "precision": "Precision", "seed": "Random seed", "num_workers": "Loader workers (-1 = auto)",
    "log_every": "Report every N steps (0 = auto)",
    "keep": "Classifier kept", "score_images": "Images scored each epoch",
    "refined_pseudo_labels": "Refined share of pseudo-labels",
    "refined_teacher": "Offer the refined last teacher",
    "threshold_mode": "Pseudo-label selection", "threshold_share": "Share passed per class",
    "threshold_momentum": "Adaptive threshold momentum",
    "center": "Centre share (folder mean)",
}

HELP: dict[str, str] = {
    "epochs": "Passes over the folder. More epochs adapt further but take longer.",
    "batch_size": "Images per step. Lower it if the GPU runs out of memory.",
    "conf_threshold": "The teacher's pseudo-labels count only above this confidence.",
    "base_lr": "Scaled by batch size / 256, as published.",
    "ema_warm_it": "Scaled to this run's length unless you set it.",
    "mask_patch_size": "0 picks a block that fits the model's patch grid.",
    "randaugment": "A timm RandAugment string; empty turns it off.",
    "prototype_init": "'refined' starts from the refined zero-shot classifier; 'auto' does where "
                      "the label-free score rates it higher; 'text+target' mixes the text "
                      "classifier with prototypes from the images.",
    "keep": "'best' keeps the classifier with the best label-free score (zero-shot included); "
            "'last' keeps the last teacher, as published.",
    "precision": "'auto' uses bf16/fp16 on CUDA and fp32 elsewhere.",
    "threshold_mode": "'fixed': pseudo-labels count above the confidence threshold, as "
                      "published; 'quantile': each class's most confident share counts; "
                      "'adaptive': FreeMatch's self-adaptive per-class thresholds.",
    "refined_pseudo_labels": "How much the refined classifier (soft k-means on the teacher's "
                             "own features) shares the teacher's pseudo-labels; 0 = the "
                             "teacher alone, as published.",
    "center": "Share of the folder's mean image embedding subtracted before classifying; "
              "training uses it where the label-free score rates the centred zero-shot "
              "classifier above zero-shot. 0 = off, as published.",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "precision": PRECISIONS, "student_view": STUDENT_VIEWS, "prototype_init": PROTOTYPE_INITS,
    "patch_norm": PATCH_NORMS, "align_cls_gradient": ALIGN_CLS_GRADIENTS,
    "keep": KEEP_MODES, "threshold_mode": THRESHOLD_MODES,
}

INT_RANGES: dict[str, tuple[int, int]] = {
    "epochs": (1, 10_000), "batch_size": (1, 65_536), "ema_warm_it": (1, 10_000_000),
    "mask_patch_size": (0, 1024), "fair_running_average_classes": (1, 1_000_000),
    "seed": (0, 2**31 - 1), "num_workers": (-1, 128), "log_every": (0, 100_000),
}


# Fractions edited with spin boxes: (min, max).
UNIT_FLOATS: dict[str, tuple[float, float]] = {
    "conf_threshold": (0.0, 0.99), "ema_decay_init": (0.0, 0.9999),
    "refined_pseudo_labels": (0.0, 1.0), "threshold_share": (0.01, 1.0),
    "threshold_momentum": (0.0, 0.99), "center": (0.0, 1.0),
    "ema_decay_final": (0.0, 0.9999), "mask_ratio": (0.0, 0.95), "layer_decay": (0.05, 1.0),
    "strong_scale_min": (0.05, 1.0),
}


def base_settings(preset: str, num_images: int | None) -> MustSettings:
    """The values a preset gives before the model-dependent choices (shown in the form)."""
    # The mask block is chosen from the model's patch grid unless set: show it as "auto".
    if preset == "auto":
        return MustSettings(**{**LABEL_FREE_RECIPE, "preset": preset, "mask_patch_size": 0})
    return MustSettings(**{**PRESETS[preset].values, **PUBLISHED_BEHAVIOUR, "preset": preset,
                           "mask_patch_size": 0})


def preset_description(name: str, num_images: int | None) -> str:
    if name == "auto":
        return "Automatic (label-free recipe; a short probe picks lr, layer decay, view, masking)"
    p = PRESETS[name]
    return f"{p.description}"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
        except (TypeError, ValueError):
            return False
    return a == b


class _FloatEdit(QLineEdit):
    """A float field that accepts 1e-5 as well as 0.00001 (spin boxes cannot)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        validator = QDoubleValidator(self)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.setValidator(validator)

    def value(self) -> float | None:
        try:
            return float(self.text())
        except ValueError:
            return None

    def set_value(self, value: float) -> None:
        self.setText(f"{value:g}")


class SettingsForm(QWidget):
    """Edits a set of MustSettings fields. ``changed`` after every user edit."""

    changed = Signal()

    def __init__(self, sections: list[tuple[str, list[str]]], *, columns: int = 1,
                 parent: QWidget | None = None) -> None:
        """``sections``: (heading, field names); headed sections are spread over
        ``columns`` columns, filling each column top to bottom."""
        super().__init__(parent)
        self._names = [n for _title, names in sections for n in names]
        self._base = MustSettings()
        self._overrides: dict[str, Any] = {}
        self._editors: dict[str, QWidget] = {}
        self._labels: dict[str, QLabel] = {}
        self._loading = False
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(28)
        grid.setVerticalSpacing(10)
        per_column = math.ceil(len(sections) / max(1, columns))
        defaults = MustSettings()
        for index, (title, names) in enumerate(sections):
            box = QVBoxLayout()
            box.setSpacing(4)
            if title:
                heading = QLabel(title)
                heading.setObjectName("formHeading")
                box.addWidget(heading)
            form = QFormLayout()
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
            form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
            for name in names:
                editor = self._make_editor(name, getattr(defaults, name))
                editor.setObjectName(f"setting_{name}")
                tip = HELP.get(name, "")
                label = QLabel(LABELS.get(name, name.replace("_", " ").capitalize()))
                label.setBuddy(editor)
                if tip:
                    editor.setToolTip(tip)
                    label.setToolTip(tip)
                self._editors[name] = editor
                self._labels[name] = label
                form.addRow(label, editor)
            box.addLayout(form)
            grid.addLayout(box, index % per_column, index // per_column,
                           Qt.AlignmentFlag.AlignTop)
        grid.setColumnStretch(max(1, columns), 1)

    # ---- editors ---------------------------------------------------------------------------
    def _make_editor(self, name: str, default: Any) -> QWidget:
        if isinstance(default, bool):
            box = QCheckBox()
            box.toggled.connect(lambda _v, n=name: self._edited(n))
            return box
        if name in CHOICES:
            combo = QComboBox()
            combo.addItems(list(CHOICES[name]))
            combo.currentIndexChanged.connect(lambda _i, n=name: self._edited(n))
            return combo
        if isinstance(default, int):
            spin = QSpinBox()
            lo, hi = INT_RANGES.get(name, (0, 1_000_000))
            spin.setRange(lo, hi)
            spin.setMinimumWidth(110)
            spin.valueChanged.connect(lambda _v, n=name: self._edited(n))
            return spin
        if name in UNIT_FLOATS:
            spin = QDoubleSpinBox()
            fine = name.startswith("ema_decay")
            spin.setDecimals(4 if fine else 2)
            spin.setRange(*UNIT_FLOATS[name])
            spin.setSingleStep(0.001 if fine else 0.05)
            spin.setMinimumWidth(110)
            spin.valueChanged.connect(lambda _v, n=name: self._edited(n))
            return spin
        if isinstance(default, float):
            edit = _FloatEdit()
            edit.setMinimumWidth(110)
            edit.textEdited.connect(lambda _t, n=name: self._edited(n))
            return edit
        line = QLineEdit()
        line.setMinimumWidth(170)
        line.textEdited.connect(lambda _t, n=name: self._edited(n))
        return line

    def _read(self, name: str) -> Any:
        w = self._editors[name]
        if isinstance(w, QCheckBox):
            return w.isChecked()
        if isinstance(w, QComboBox):
            return w.currentText()
        if isinstance(w, (QSpinBox, QDoubleSpinBox)):
            return w.value()
        if isinstance(w, _FloatEdit):
            return w.value()
        return w.text()

    def _write(self, name: str, value: Any) -> None:
        w = self._editors[name]
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QComboBox):
            w.setCurrentIndex(max(0, w.findText(str(value))))
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(value)
        elif isinstance(w, _FloatEdit):
            w.set_value(float(value))
        else:
            w.setText(str(value))

    def _edited(self, name: str) -> None:
        if self._loading:
            return
        value = self._read(name)
        if value is None:  # a half-typed number: wait for the rest
            return
        if _same(value, getattr(self._base, name)):
            self._overrides.pop(name, None)
        else:
            self._overrides[name] = value
        self._mark(name)
        self.changed.emit()

    def _mark(self, name: str) -> None:
        label = self._labels[name]
        font = label.font()
        font.setBold(name in self._overrides)
        label.setFont(font)

    # ---- public ----------------------------------------------------------------------------
    def editor(self, name: str) -> QWidget:
        return self._editors[name]

    def set_state(self, base: MustSettings, overrides: dict[str, Any]) -> None:
        """Show ``base`` with ``overrides`` (only this form's fields are kept) on top."""
        self._base = base
        self._overrides = {k: v for k, v in overrides.items() if k in self._editors}
        self._loading = True
        try:
            for name in self._names:
                self._write(name, self._overrides.get(name, getattr(base, name)))
                self._mark(name)
        finally:
            self._loading = False

    def overrides(self) -> dict[str, Any]:
        return dict(self._overrides)

    def reset(self) -> None:
        self.set_state(self._base, {})
        self.changed.emit()


ADVANCED_SECTIONS: list[tuple[str, list[str]]] = [
    ("Schedule", ["base_lr", "min_lr", "weight_decay", "layer_decay"]),
    ("Teacher", ["ema_decay_init", "ema_decay_final", "ema_warm_it", "threshold_mode",
                 "threshold_share", "threshold_momentum"]),
    ("Masking", ["mask_ratio", "mask_patch_size"]),
    ("Losses", ["w_fair", "w_mim", "w_align", "use_fair", "use_mim", "use_align",
                "fair_running_average_classes", "patch_norm", "align_cls_gradient"]),
    ("Views and classifier", ["student_view", "randaugment", "strong_scale_min",
                              "prototype_init"]),
    ("Runtime", ["precision", "seed", "num_workers", "log_every"]),
]


def advanced_sections() -> list[tuple[str, list[str]]]:
    """The Advanced fields by theme; a field added to MustSettings later lands in "Other"."""
    listed = {n for _t, names in ADVANCED_SECTIONS for n in names}
    rest = [f.name for f in fields(MustSettings)
            if f.name not in listed and f.name not in PLAIN_FIELDS and f.name not in NOT_FIELDS]
    return ADVANCED_SECTIONS + ([("Other", rest)] if rest else [])


def advanced_field_names() -> list[str]:
    return [n for _t, names in advanced_sections() for n in names]


class PresetPicker(QComboBox):
    """The preset list ("auto" plus the paper's rows) with a description for each."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Long descriptions must not widen the page: the list pops up at full width anyway.
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(24)
        for name in PRESET_NAMES:
            self.addItem(name, name)
        self.describe(None)

    def describe(self, num_images: int | None) -> None:
        for i in range(self.count()):
            name = self.itemData(i)
            self.setItemText(i, f"{name} — {preset_description(name, num_images)}")

    def preset(self) -> str:
        return self.currentData() or "auto"

    def set_preset(self, name: str) -> None:
        index = self.findData(name)
        self.setCurrentIndex(index if index >= 0 else 0)


def reset_button(form: SettingsForm, text: str = "Reset to preset") -> QPushButton:
    button = QPushButton(text)
    button.clicked.connect(form.reset)
    return button

"""The spot-check: one image at a time, large, "which class is this?", with the classes as
buttons (keys 1-9), "None of these" (N) and "Skip" (S). From 30 answers on it shows the
estimated accuracy of the adapted and zero-shot classifiers with 95 % intervals.

The classifier's own answer is not shown, so it cannot sway the person answering. Every
answer is saved at once in the project's labels file and becomes a correction for the next
run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QKeyEvent, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from must_engine.predict import Predictions
from must_engine.trust.spot_check import (
    MIN_ANSWERS,
    NONE_OF_THESE,
    Interval,
    SpotCheckEstimate,
    SpotCheckPlan,
    estimate,
)
from must_engine.trust.user_labels import SpotCheckState, UserLabels

IMAGE_SIDE = 420


def interval_text(i: Interval) -> str:
    if i.answers == 0 or not math.isfinite(i.value):
        return "no answers"
    return f"{i.value:.0%} ({i.low:.0%}–{i.high:.0%})"


class SpotCheckDialog(QDialog):
    """Signals: answered(str path, object label name or None); estimateChanged()."""

    answered = Signal(str, object)
    estimateChanged = Signal()

    def __init__(self, predictions: Predictions, labels: UserLabels, labels_file: Path | None,
                 run_key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Spot-check")
        self.pred = predictions
        self.labels = labels
        self.labels_file = labels_file
        self._index = {p: i for i, p in enumerate(predictions.paths)}
        state = labels.spot_check
        if state is None or state.run != run_key:
            # images the user already labelled are left out: they say nothing new
            plan = SpotCheckPlan.build(predictions.paths, predictions.labels(),
                                       predictions.confidences(), exclude=set(labels.labels))
            state = SpotCheckState(run_key, plan.to_dict())
            labels.spot_check = state
        self.state = state
        self.plan = SpotCheckPlan.from_dict(state.plan)
        self.current: str | None = None
        self.result: SpotCheckEstimate | None = None
        self._build()
        self._next()
        self._refresh_estimate()

    # ---- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.question = QLabel("Which class is this?")
        f = self.question.font()
        f.setPointSizeF(f.pointSizeF() * 1.3)
        f.setBold(True)
        self.question.setFont(f)
        self.image = QLabel()
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setMinimumSize(IMAGE_SIDE, IMAGE_SIDE)
        self.image.setStyleSheet("background: #202020;")
        self.file_label = QLabel()
        self.file_label.setStyleSheet("color: gray;")

        buttons = QGridLayout()
        self.class_buttons: list[QPushButton] = []
        names = self.pred.class_names
        per_row = 3 if len(names) > 4 else 2
        for c, name in enumerate(names):
            text = f"{(c + 1) % 10}  {name}" if c < 10 else name  # 0 for the tenth
            b = QPushButton(text)
            b.setMinimumHeight(34)
            b.clicked.connect(lambda _=False, c=c: self.answer(c))
            buttons.addWidget(b, c // per_row, c % per_row)
            self.class_buttons.append(b)
        row = (len(names) + per_row - 1) // per_row
        self.none_button = QPushButton("None of these  (N)")
        self.none_button.clicked.connect(lambda: self.answer(NONE_OF_THESE))
        self.skip_button = QPushButton("Skip  (S)")
        self.skip_button.setToolTip("Not sure: show another image from the same group")
        self.skip_button.clicked.connect(self.skip)
        buttons.addWidget(self.none_button, row, 0)
        buttons.addWidget(self.skip_button, row, 1)

        left = QVBoxLayout()
        left.addWidget(self.question)
        left.addWidget(self.image, 1)
        left.addWidget(self.file_label)
        left.addLayout(buttons)

        self.progress = QLabel()
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextFormat(Qt.TextFormat.RichText)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["true class", "answers", "adapted", "zero-shot"])
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        # "100% (31%–100%)" on one line: wrapped, the intervals were hard to read
        self.table.setWordWrap(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        note = QLabel("Answers are weighted for the stratified sample (by predicted class and "
                      "confidence); intervals are 95 %. Your answers are saved in the project "
                      "and train the next run as corrections.")
        note.setWordWrap(True)
        note.setStyleSheet("color: gray;")
        right = QVBoxLayout()
        right.addWidget(self.progress)
        right.addWidget(self.estimate_label)
        right.addWidget(self.table, 1)
        right.addWidget(note)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        right.addWidget(close, 0, Qt.AlignmentFlag.AlignRight)
        side = QWidget()
        side.setLayout(right)
        side.setMinimumWidth(360)

        layout = QHBoxLayout(self)
        layout.addLayout(left, 3)
        layout.addWidget(side, 2)

    def _action_for(self, key: int):
        if Qt.Key.Key_1 <= key <= Qt.Key.Key_9 and key - Qt.Key.Key_1 < len(self.class_buttons):
            return lambda: self.answer(key - Qt.Key.Key_1)
        if key == Qt.Key.Key_0 and len(self.class_buttons) >= 10:
            return lambda: self.answer(9)
        if key == Qt.Key.Key_N:
            return lambda: self.answer(NONE_OF_THESE)
        if key == Qt.Key.Key_S:
            return self.skip
        return None

    def event(self, event: QEvent) -> bool:
        # Claim our keys before any shortcut of the window underneath (the results page
        # filters by class on the same number keys).
        if event.type() == QEvent.Type.ShortcutOverride and self._action_for(event.key()):
            event.accept()
            return True
        return super().event(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Keys, not shortcuts: the buttons pass keys they do not use up to the dialog.
        action = self._action_for(event.key())
        if action is not None:
            action()
        else:
            super().keyPressEvent(event)

    # ---- answering ---------------------------------------------------------------------------
    def answered_per_stratum(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for p in self.state.answers:
            if p in self.plan._index:
                h = self.plan.stratum_of(p)
                counts[h] = counts.get(h, 0) + 1
        return counts

    def _next(self) -> None:
        self.current = self.plan.next_question(self.state.asked, self.answered_per_stratum())
        enabled = self.current is not None
        for b in [*self.class_buttons, self.none_button, self.skip_button]:
            b.setEnabled(enabled)
        if self.current is None:
            self.image.setPixmap(QPixmap())
            self.image.setText("Every image has been asked.")
            self.file_label.setText("")
            return
        pix = QPixmap(str(self.pred.root / self.current))
        if not pix.isNull():
            pix = pix.scaled(IMAGE_SIDE, IMAGE_SIDE, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.SmoothTransformation)
        self.image.setPixmap(pix)
        self.file_label.setText(self.current)

    def answer(self, label: int) -> None:
        """Answer the current image: a class index, or NONE_OF_THESE."""
        if self.current is None:
            return
        path = self.current
        name = None if label == NONE_OF_THESE else self.pred.class_names[label]
        if path not in self.state.asked:
            self.state.asked.append(path)
        self.state.answers[path] = name
        self.labels.set_label(path, name, "spot-check")
        self._save()
        self.answered.emit(path, name)
        self._next()
        self._refresh_estimate()

    def skip(self) -> None:
        if self.current is None:
            return
        self.state.asked.append(self.current)
        self._save()
        self._next()

    def _save(self) -> None:
        if self.labels_file is not None:
            self.labels.save(self.labels_file)

    # ---- the estimate ------------------------------------------------------------------------
    def answer_count(self) -> int:
        return sum(1 for p in self.state.answers if p in self.plan._index)

    def _refresh_estimate(self) -> None:
        n = self.answer_count()
        self.progress.setText(f"<b>{n}</b> answers · the estimate appears from "
                              f"{MIN_ANSWERS}" if n < MIN_ANSWERS else f"<b>{n}</b> answers")
        if n < MIN_ANSWERS:
            self.result = None
            self.estimate_label.setText(f"Answer {MIN_ANSWERS - n} more to see how accurate "
                                        "the classifier is.")
            self.table.setRowCount(0)
            return
        names = self.pred.class_names
        index = {n: i for i, n in enumerate(names)}
        answers = {p: (NONE_OF_THESE if v is None else index[v])
                   for p, v in self.state.answers.items() if v is None or v in index}
        rows = np.array([self._index[p] for p in answers], dtype=np.int64)
        adapted = dict(zip(answers, self.pred.labels()[rows].tolist(), strict=True))
        zero = dict(zip(answers, self.pred.zero_shot_labels()[rows].tolist(), strict=True))
        self.result = estimate(self.plan, answers, adapted, zero, names)
        r = self.result
        lines = [f"Adapted: <b>{interval_text(r.adapted.overall)}</b>"]
        if self.pred.probs is not None:
            lines.append(f"Zero-shot: <b>{interval_text(r.zero_shot.overall)}</b>")
        lines.append(f"About {r.more_answers_to_halve} more answers would halve the interval.")
        if r.none_of_these:
            lines.append(f"{r.none_of_these} answered “none of these” (counted as wrong).")
        self.estimate_label.setText("<br>".join(lines))
        self.table.setRowCount(len(names))
        for c, name in enumerate(names):
            a, z = r.adapted.per_class[c], r.zero_shot.per_class[c]
            for col, text in enumerate((name, str(a.answers), interval_text(a),
                                        interval_text(z))):
                self.table.setItem(c, col, QTableWidgetItem(text))
        self.estimateChanged.emit()

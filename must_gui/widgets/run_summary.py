"""Above the training plots: the expected time, the settings the probe chose and the
classifier the run keeps, each in a small card, with *Details…* for the probe's candidates
and every label-free score. A run whose kept classifier is not better than zero-shot turns
its card red and says so in plain words. The cards keep one height whatever they hold, so
news arriving never resizes the plots (a resize redraws every plot)."""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from must_gui.run_report import PROBE_MARGIN, TEACHER, RunReport, format_duration

LINES = 3  # value lines a card shows
MUTED = "#667085"
ALARM = "#b42318"
CARD_STYLE = """
QFrame#summaryCard { background: white; border: 1px solid #dde2ea; border-radius: 6px; }
QFrame#summaryCard[alarm="true"] { background: #fef3f2; border: 1px solid #f04438; }
QFrame#summaryCard[good="true"] { border: 1px solid #75c69a; }
QFrame#summaryCard QLabel { background: transparent; border: none; }
"""
# Signal names in the details table, in the order shown, with a plain heading each.
SIGNALS = (("confidence", "confidence", "mean top-class probability"),
           ("balance", "balance", "how evenly the predicted classes spread (part of the score)"),
           ("cot", "COT", "one minus the confidence optimal transport error estimate (part of "
                          "the score)"),
           ("nuclear", "nuclear", "nuclear norm of the prediction matrix (Deng et al.)"),
           ("prototype_agreement", "agreement", "agreement with the nearest class means of its "
                                                "own features"),
           ("separation", "margin", "cluster margin of the features under its labels"))


class SummaryCard(QFrame):
    """A caption and at least LINES lines of rich text."""

    def __init__(self, caption: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("summaryCard")
        self.caption = QLabel(caption)
        self.caption.setStyleSheet(f"color: {MUTED}; font-size: 8.5pt; font-weight: 600;")
        self.value = QLabel()
        self.value.setWordWrap(True)
        self.value.setTextFormat(Qt.TextFormat.RichText)
        self.value.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 5, 10, 5)
        layout.setSpacing(1)
        layout.addWidget(self.caption)
        layout.addWidget(self.value, 1)
        # room for LINES lines from the start, so the row does not jump as text arrives;
        # a longer reason grows the card rather than being cut off mid-sentence
        self.value.setMinimumHeight(LINES * self.value.fontMetrics().lineSpacing() + 2)

    def set(self, html: str, tooltip: str = "", *, alarm: bool = False,
            good: bool = False) -> None:
        self.value.setText(html)
        self.setToolTip(tooltip)
        if self.property("alarm") != alarm or self.property("good") != good:
            self.setProperty("alarm", alarm)
            self.setProperty("good", good)
            self.style().unpolish(self)
            self.style().polish(self)

    def text(self) -> str:
        """The card's words without markup (tests, accessibility)."""
        from PySide6.QtGui import QTextDocument

        doc = QTextDocument()
        doc.setHtml(self.value.text())
        return doc.toPlainText()

    @property
    def alarm(self) -> bool:
        return bool(self.property("alarm"))


def _muted(text: str) -> str:
    return f"<span style='color:{MUTED}'>{escape(text)}</span>"


class RunSummaryBar(QWidget):
    """The three cards and the Details button; ``show_report`` fills them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("runSummary")
        self.setStyleSheet(CARD_STYLE)
        self.time_card = SummaryCard("TRAINING TIME")
        self.probe_card = SummaryCard("SETTINGS")
        self.kept_card = SummaryCard("CLASSIFIER KEPT (LABEL-FREE SCORE)")
        self.details_button = QPushButton("&Details…")
        self.details_button.setToolTip("What the settings probe tried, and the label-free "
                                       "score of every classifier the run could hand back")
        self.details_button.clicked.connect(self.open_details)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.time_card, 3)
        layout.addWidget(self.probe_card, 5)
        layout.addWidget(self.kept_card, 5)
        layout.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignBottom)
        self.report = RunReport()
        self.dialog: RunDetailsDialog | None = None
        self._elapsed: float | None = None
        self._left: float | None = None
        self._state = ""
        self.show_report(RunReport())

    # ---- filling -------------------------------------------------------------------------
    def show_report(self, report: RunReport, *, state: str = "") -> None:
        """``state``: "" (nothing yet), "preparing", "probing", "training", "finished" or
        "stopped"."""
        self.report = report
        self._state = state
        self._fill_time()
        self._fill_probe()
        self._fill_kept()
        self.details_button.setEnabled(bool(report.probe or report.scores))
        if self.dialog is not None and self.dialog.isVisible():
            self.dialog.show_report(report)

    def set_time_left(self, seconds_left: float | None, elapsed: float | None = None) -> None:
        """The measured time left (None: not measured yet) and time spent so far."""
        self._left, self._elapsed = seconds_left, elapsed
        self._fill_time()

    def _fill_time(self) -> None:
        r = self.report
        expected = r.expected_text()
        tip = r.expected_detail()
        lines = []
        pace = None
        if self._left is not None and self._elapsed is not None:
            pace = self._elapsed + self._left
        if r.finished is not None and not r.finished.stopped:
            if r.resumed_at:  # the time of the part since it was resumed
                lines.append(f"<b>Took {format_duration(r.finished.seconds)} after resuming "
                             f"at step {r.resumed_at}</b>")
                lines.append(_muted(f"expected {expected} for the whole run") if expected
                             else _muted("no estimate was made before this run"))
            else:
                lines.append(f"<b>Took {format_duration(r.finished.seconds)}</b>")
                lines.append(_muted(f"expected {expected}") if expected else
                             _muted("no estimate was made before this run"))
        elif self._state == "training" and pace is not None:
            head = f"Expected: {expected}" if expected else "No estimate before this run"
            lines.append(f"<b>{escape(head)}</b>")
            so_far = (f"{format_duration(self._elapsed)} so far; "
                      f"{format_duration(pace)} in all at this pace")
            if r.estimate is not None and r.estimate.seconds > 0:
                ratio = pace / r.estimate.seconds
                so_far += (": slower than expected" if ratio > 1.25 else
                           ": faster than expected" if ratio < 0.8 else ": on track")
            lines.append(_muted(so_far))
        elif expected:
            lines.append(f"<b>Expected: {escape(expected)}</b>")
            if self._state == "stopped":
                lines.append(_muted("the run was stopped before the end"))
            else:
                lines.append(_muted(tip))
        elif self._state in ("preparing", "probing"):
            lines.append(_muted("Measured on this device before training starts."))
        elif self._state:
            lines.append(_muted("No estimate was made before this run (the preset is not "
                                "auto, the run was resumed, or an older run)."))
        else:
            lines.append(_muted("Known once a run starts."))
        self.time_card.set("<br>".join(lines), tip)

    def _fill_probe(self) -> None:
        r = self.report
        p = r.probe
        if p is None:
            text = (_muted("Trying a few candidate settings briefly on your images, each "
                           "scored without labels…") if self._state == "probing" else
                    _muted("Decided before training starts (with the auto preset, by a "
                           "short probe).") if self._state == "preparing" else
                    _muted("No probe ran: the run trains with its settings as set (the "
                           "probe needs the auto preset and a run long enough to spare it "
                           "a few steps).") if self._state else
                    _muted("With the auto preset, a short probe picks them from your images."))
            self.probe_card.set(text)
            return
        html = f"<b>{escape(r.probe_text())}</b>"
        if p.settings:  # the recipe's own settings need no words
            html += f"<br>{escape(r.chosen_settings_text())}"
        note = r.probe_note()
        if note:
            html += f"<br>{_muted(note)}"
        scores = "\n".join(f"{c['name']}: {c['score']:.3f}" for c in p.candidates)
        self.probe_card.set(html, f"Label-free score of each candidate after a short run on "
                                  f"{p.images:,} images:\n{scores}")

    def _fill_kept(self) -> None:
        r = self.report
        verdict = r.below_zero_shot()
        if verdict:
            best = r.best_teacher()
            if r.kept is not None and r.kept.kind == "zero_shot" and best is not None:
                why = (f"training's best ({best.label}) scored {best.score:.3f}: the trained "
                       "weights are not used")
            else:
                why = "probably worse than the model you started from"
            self.kept_card.set(
                f"<b style='color:{ALARM}'>⚠ Not better than zero-shot</b><br>"
                f"<span style='color:{ALARM}'>{escape(r.kept_text())}; {escape(why)}</span>",
                f"{verdict} {r.suggestion()}".strip(), alarm=True)
            return
        now = r.kept_text()
        if not now:
            self.kept_card.set(_muted("Each classifier the run could hand back (zero-shot, "
                                      "refined zero-shot, the teacher after each epoch) is "
                                      "scored without labels; the best is kept."
                                      if not self._state else
                                      "Scored once the starting classifiers are built."))
            return
        if r.kept is not None:
            html = f"<b>{escape(now)}</b><br>{_muted(r.reason_text())}"
            self.kept_card.set(html, r.reason_text(), good=r.kept.kind == TEACHER)
        else:
            self.kept_card.set(f"<b>So far: {escape(now)}</b><br>"
                               f"{_muted('the best-scored classifier is what the run keeps')}")

    # ---- details ---------------------------------------------------------------------------
    def open_details(self) -> RunDetailsDialog:
        if self.dialog is None:
            self.dialog = RunDetailsDialog(self)
        self.dialog.show_report(self.report)
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog


class RunDetailsDialog(QDialog):
    """The probe's candidates and every label-free score, as tables."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("What the run tried and kept")
        self.resize(940, 560)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tabs = QTabWidget()
        self.scores_table = _table()
        self.probe_table = _table()
        self.probe_note = QLabel()
        self.probe_note.setWordWrap(True)
        self.probe_note.setObjectName("hint")
        probe_page = QWidget()
        pl = QVBoxLayout(probe_page)
        pl.addWidget(self.probe_note)
        pl.addWidget(self.probe_table, 1)
        self.tabs.addTab(self.scores_table, "Label-free scores")
        self.tabs.addTab(probe_page, "Settings probe")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(buttons)

    def show_report(self, r: RunReport) -> None:
        parts = []
        if r.kept is not None:
            parts.append(f"<b>Kept: {escape(r.kept_text())}.</b> {escape(r.reason_text())}")
        elif r.kept_so_far() is not None:
            parts.append(f"<b>Kept so far: {escape(r.kept_text())}.</b>")
        verdict = r.below_zero_shot()
        if verdict:
            parts.append(f"<span style='color:{ALARM}'><b>⚠ {escape(verdict)}</b> "
                         f"{escape(r.suggestion())}</span>")
        parts.append(_muted("The label-free score (0 to 1, higher is better) is measured "
                            "without labels on a fixed sample of your images; it ranks "
                            "classifiers, it is not an accuracy."))
        self.summary.setText("<br>".join(parts))
        self._fill_scores(r)
        self._fill_probe(r)

    def _fill_scores(self, r: RunReport) -> None:
        kept = r.kept_point()
        headers = ["Classifier", "Score", "vs zero-shot"] + [h for _k, h, _t in SIGNALS]
        rows = []
        zero = r.zero_shot_score
        for s in r.scores:
            diff = "" if zero is None or s.kind == "zero_shot" else f"{s.score - zero:+.3f}"
            is_kept = kept is not None and (s.kind, s.epoch + 1) == kept[:2]
            label = s.label + ("  ← kept" if is_kept else "")
            rows.append(([label, f"{s.score:.3f}", diff]
                         + [_signal(s.signals, k) for k, _h, _t in SIGNALS], is_kept))
        _fill(self.scores_table, headers, rows)
        for i, (_k, _h, tip) in enumerate(SIGNALS):
            self.scores_table.horizontalHeaderItem(3 + i).setToolTip(tip)

    def _fill_probe(self, r: RunReport) -> None:
        p = r.probe
        if p is None:
            self.probe_note.setText("No settings probe ran for this run: it trained with its "
                                    "settings as set (the probe needs the auto preset and a "
                                    "run long enough to spare it a few steps).")
            _fill(self.probe_table, ["Candidate", "Score", "Settings"], [])
            return
        note = (f"Each candidate trained briefly on {p.images:,} images and was scored by the "
                f"label-free measure; a candidate must beat the recipe by more than "
                f"{PROBE_MARGIN} to replace it. Training with: {r.chosen_settings_text()}.")
        if r.estimate is not None:
            note += (f" Expected training time {r.expected_text()} "
                     f"({r.expected_detail()}).")
        self.probe_note.setText(note)
        rows = []
        for c in p.candidates:
            chosen = c.get("name") == p.chosen
            settings = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                                 for k, v in (c.get("settings") or {}).items()) or "as is"
            rows.append(([c.get("name", "") + ("  ← chosen" if chosen else ""),
                          f"{c.get('score', 0.0):.3f}", settings], chosen))
        _fill(self.probe_table, ["Candidate", "Score", "Settings"], rows)


def _signal(signals: dict, key: str) -> str:
    value = signals.get(key)
    return f"{value:.3f}" if isinstance(value, int | float) else ""


def _table() -> QTableWidget:
    table = QTableWidget()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    table.verticalHeader().hide()
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().lineSpacing() + 8)
    return table


def _fill(table: QTableWidget, headers: list[str], rows: list[tuple[list[str], bool]]) -> None:
    table.clear()
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setRowCount(len(rows))
    for r, (cells, bold) in enumerate(rows):
        for c, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if c > 0 and text[:1] in "+-0123456789":
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if bold:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            table.setItem(r, c, item)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    # the probe's settings column takes the spare width; in the scores, the names do
    if headers:
        stretch = len(headers) - 1 if headers[-1] == "Settings" else 0
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    for r, (_cells, bold) in enumerate(rows):
        if bold:  # the kept or chosen row in view
            table.scrollToItem(table.item(r, 0))


class KeptBanner(QLabel):
    """The results' line about the model that made them: which classifier the run kept, its
    label-free score against zero-shot and why; red, in plain words, when it is not better
    than zero-shot. Hidden for a run that kept nothing (stopped, or an older run)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("keptBanner")
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.alarm = False
        self.hide()

    def show_report(self, r: RunReport) -> None:
        verdict = r.below_zero_shot()
        self.alarm = bool(verdict)
        if verdict:
            self.setStyleSheet(f"QLabel#keptBanner {{ background: #fef3f2; color: {ALARM}; "
                               "border: 1px solid #f04438; border-radius: 6px; "
                               "padding: 6px 10px; margin: 6px 8px 0 8px; }")
            self.setText(f"<b>⚠ This model is not better than zero-shot by its own label-free "
                         f"measure.</b> {escape(verdict)} {escape(r.suggestion())}")
            self.setToolTip(r.reason_text())
            self.show()
        elif r.kept is not None:
            self.setStyleSheet("QLabel#keptBanner { color: #344054; padding: 6px 8px 0 8px; }")
            self.setText(f"Model: <b>{escape(r.kept_text())}</b> · "
                         f"{_muted(r.reason_text())}")
            self.setToolTip("The label-free score (0 to 1, higher is better) ranks the "
                            "classifiers a run could hand back, without labels; it is not an "
                            "accuracy.")
            self.show()
        else:
            self.clear()
            self.hide()

"""Live training plots (pyqtgraph).

Events only append to numpy buffers; a QTimer redraws at about 20 Hz when something
changed, with peak downsampling and clip-to-view, so a fast run cannot flood the GUI
thread with repaints (pyqtgraph's scrolling-plots pattern).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QVBoxLayout, QWidget  # noqa: E402

from must_engine.events import EpochSummary, RunStarted, StepMetrics  # noqa: E402

REDRAW_MS = 50
TEXT = "#344054"
GRID_ALPHA = 0.25
# Lines are one pixel wide: Qt's antialiased wide lines are slow, and over a few hundred
# noisy steps 1.4-2.2 px lines made a repaint of the dashboard take ~220 ms against ~17 ms
# (measured offscreen), stalling the window while a run trains.
LINE_WIDTH = 1.0
LOSS_SERIES = (
    ("loss_total", "total", "#101828"),
    ("loss_st", "self-training", "#2e6fdb"),
    ("loss_fair", "fairness", "#e07b1a"),
    ("loss_mim", "masked image", "#2f9e5a"),
    ("loss_align", "alignment", "#b03ab5"),
)
CONFIDENCE_SERIES = (
    ("confident_fraction", "fraction confident", "#2e6fdb"),
    ("teacher_confidence", "mean", "#e07b1a"),
)
BAR_ALL = "#b7cdf3"
BAR_CONFIDENT = "#2e6fdb"
THRESHOLD_COLOUR = "#d92d20"
LR_COLOUR = "#2e6fdb"
SCORE_COLOUR = "#2e6fdb"
ZERO_SHOT_COLOUR = "#667085"
REFINED_COLOUR = "#2f9e5a"
CENTRED_COLOUR = "#8e44ad"
KEPT_COLOUR = "#e07b1a"
MAX_NAMED_CLASSES = 40


def configure_pyqtgraph() -> None:
    """A light look that matches the app; call before creating plots."""
    pg.setConfigOptions(background="w", foreground=TEXT, antialias=True)


class _Series:
    """A growing (x, y) buffer: amortised O(1) appends, numpy views for drawing."""

    def __init__(self) -> None:
        self._x = np.empty(256)
        self._y = np.empty(256)
        self.n = 0

    def append(self, x: float, y: float) -> None:
        if self.n == len(self._x):
            self._x = np.concatenate([self._x, np.empty(len(self._x))])
            self._y = np.concatenate([self._y, np.empty(len(self._y))])
        self._x[self.n] = x
        self._y[self.n] = y
        self.n += 1

    def clear(self) -> None:
        self.n = 0

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.n]


def _style_plot(plot: pg.PlotItem, title: str, x_label: str = "", y_label: str = "",
                grid_y: bool = True) -> None:
    plot.setTitle(_title(title))
    plot.showGrid(x=True, y=grid_y, alpha=GRID_ALPHA)
    for side in ("left", "bottom"):
        plot.getAxis(side).setStyle(maxTickLevel=1)  # no sub-minor grid lines
    if x_label:
        plot.setLabel("bottom", x_label)
    if y_label:
        plot.setLabel("left", y_label)
    plot.setMenuEnabled(False)


class ClassBars:
    """Horizontal bars, one a class, names on the left axis: all / confident counts."""

    def __init__(self, plot: pg.PlotItem) -> None:
        self.plot = plot
        self.all = pg.BarGraphItem(x0=[], y=[], width=[], height=0.75, brush=BAR_ALL, pen=None)
        self.confident = pg.BarGraphItem(x0=[], y=[], width=[], height=0.75,
                                         brush=BAR_CONFIDENT, pen=None)
        plot.addItem(self.all)
        plot.addItem(self.confident)
        plot.invertY(True)  # first class on top, as in the class list
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        self.names: list[str] = []
        self.counts: list[int] = []

    def set_counts(self, names: Sequence[str], counts: Sequence[int],
                   confident: Sequence[int] | None = None) -> None:
        self.names, self.counts = list(names), [int(c) for c in counts]
        y = np.arange(len(counts))
        self.all.setOpts(x0=np.zeros(len(counts)), y=y, width=np.asarray(counts, float),
                         height=0.75)
        if confident is not None:
            self.confident.setOpts(x0=np.zeros(len(confident)), y=y,
                                   width=np.asarray(confident, float), height=0.75)
            self.confident.show()
        else:
            self.confident.hide()
        axis = self.plot.getAxis("left")
        if len(names) <= MAX_NAMED_CLASSES:
            axis.setTicks([[(i, _short(n)) for i, n in enumerate(names)]])
        else:
            axis.setTicks(None)
        top = max(counts) if len(counts) else 1
        self.plot.setYRange(-0.6, max(0, len(counts) - 1) + 0.6, padding=0)
        self.plot.setXRange(0, max(1, top) * 1.08, padding=0)


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


class ClassCountsChart(pg.PlotWidget):
    """Predicted images per class (the zero-shot preview), as horizontal bars."""

    def __init__(self, parent: QWidget | None = None) -> None:
        configure_pyqtgraph()
        super().__init__(parent)
        self.setObjectName("classCountsChart")
        _style_plot(self.getPlotItem(), "Images per predicted class", "images", grid_y=False)
        self.bars = ClassBars(self.getPlotItem())

    def set_counts(self, names: Sequence[str], counts: Sequence[int]) -> None:
        self.bars.set_counts(names, counts)
        rows = max(1, len(names))
        self.setMinimumHeight(min(640, 90 + 24 * rows))


class TrainingPlots(QWidget):
    """The training dashboard: losses, confidence, learning rate, pseudo-label and
    confidence histograms. Feed it events with ``handle``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        configure_pyqtgraph()
        super().__init__(parent)
        self.view = pg.GraphicsLayoutWidget(self)
        self.view.setObjectName("trainingPlots")
        self.view.ci.setSpacing(10)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

        self.loss_plot = self.view.addPlot(row=0, col=0)
        _style_plot(self.loss_plot, "Losses", "step")
        self.score_plot = self.view.addPlot(row=0, col=1)
        _style_plot(self.score_plot, "Label-free score", "epoch")
        self.score_plot.setMouseEnabled(x=False, y=False)
        self.score_plot.hideButtons()
        self.confidence_plot = self.view.addPlot(row=0, col=2)
        _style_plot(self.confidence_plot, "Teacher confidence", "step")
        self.confidence_plot.setYRange(0, 1.02, padding=0)
        self.lr_plot = self.view.addPlot(row=1, col=0)
        _style_plot(self.lr_plot, "Learning rate", "step")
        self.lr_plot.setTitle(_legend_title("Learning rate", [(LR_COLOUR, "cosine schedule")]))
        self.lr_plot.getAxis("left").enableAutoSIPrefix(True)
        self.labels_plot = self.view.addPlot(row=1, col=1)
        _style_plot(self.labels_plot, "Pseudo-labels per class", "images", grid_y=False)
        self.hist_plot = self.view.addPlot(row=1, col=2)
        _style_plot(self.hist_plot, "Confidence histogram", "teacher confidence")
        self.hist_plot.setMouseEnabled(x=False, y=False)
        self.hist_plot.hideButtons()

        for plot in (self.loss_plot, self.confidence_plot, self.lr_plot):
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
        self.series: dict[str, _Series] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        # Legends go in the titles: a legend box inside the plot hides the curves under it.
        for key, _label, colour in LOSS_SERIES:
            self._add_curve(self.loss_plot, key, colour)
        self.loss_plot.setTitle(_legend_title("Losses", _keys(LOSS_SERIES)))
        for key, _label, colour in CONFIDENCE_SERIES:
            self._add_curve(self.confidence_plot, key, colour)
        self.confidence_plot.setTitle(_legend_title("Teacher confidence",
                                                    _keys(CONFIDENCE_SERIES)))
        self._add_curve(self.lr_plot, "lr", LR_COLOUR)

        self.class_bars = ClassBars(self.labels_plot)
        self.hist_bars = pg.BarGraphItem(x0=[], x1=[], y0=[], y1=[], brush=BAR_CONFIDENT,
                                         pen=pg.mkPen("w", width=1))
        self.hist_plot.addItem(self.hist_bars)
        self.threshold_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(THRESHOLD_COLOUR, width=1.5,
                                                                     style=Qt.PenStyle.DashLine))
        self.hist_plot.addItem(self.threshold_line)
        self.threshold_line.hide()
        self._build_score_plot()

        self.class_names: list[str] = []
        self.epochs_seen = 0
        self.points = 0  # step events received, for tests and the status line
        self._dirty = False
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        self._timer.start()
        self.reset()

    def _add_curve(self, plot: pg.PlotItem, key: str, colour: str) -> None:
        curve = plot.plot([], [], pen=pg.mkPen(colour, width=LINE_WIDTH))
        self.series[key] = _Series()
        self.curves[key] = curve

    # ---- feeding ---------------------------------------------------------------------------
    def reset(self, class_names: Sequence[str] = (), threshold: float | None = None) -> None:
        for s in self.series.values():
            s.clear()
        self.points = 0
        self.epochs_seen = 0
        self.class_names = list(class_names)
        self.class_bars.set_counts(self.class_names, [0] * len(self.class_names),
                                   [0] * len(self.class_names))
        self._title_bars(None)
        self._title_hist(None)
        self.hist_bars.setOpts(x0=[], x1=[], y0=[], y1=[])
        self.set_threshold(threshold)
        # Back to empty axes: with no data, auto-range keeps whatever the last run showed.
        for plot in (self.loss_plot, self.lr_plot):
            plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
            plot.enableAutoRange()
        self.confidence_plot.setXRange(0, 1, padding=0)
        self.confidence_plot.enableAutoRange(axis="x")
        self.hist_plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0.02)
        self.show_scores(None)
        self._dirty = True

    # Every title has two lines (name, then a key) so the plots in a row line up.
    def _title_bars(self, epoch: int | None) -> None:
        when = f", epoch {epoch}" if epoch else ""
        self.labels_plot.setTitle(_legend_title(f"Pseudo-labels per class{when}", [
            (BAR_ALL, "all"), (BAR_CONFIDENT, "above the threshold")]))

    def _title_hist(self, epoch: int | None) -> None:
        when = f", epoch {epoch}" if epoch else ""
        self.hist_plot.setTitle(_legend_title(f"Teacher confidence histogram{when}", [
            (BAR_CONFIDENT, "images"), (THRESHOLD_COLOUR, "threshold")]))

    def set_threshold(self, threshold: float | None) -> None:
        if threshold is None:
            self.threshold_line.hide()
        else:
            self.threshold_line.setValue(threshold)
            self.threshold_line.show()

    def handle(self, event: object) -> None:
        if isinstance(event, StepMetrics):
            x = event.step + 1
            for key in self.series:
                self.series[key].append(x, getattr(event, key))
            self.points += 1
            self._dirty = True
        elif isinstance(event, EpochSummary):
            self._show_epoch(event)
        elif isinstance(event, RunStarted) and not self.class_names:
            self.reset(event.class_names)

    def _show_epoch(self, event: EpochSummary) -> None:
        self.epochs_seen = event.epoch + 1
        names = self.class_names or [str(i) for i in range(len(event.pseudo_label_counts))]
        self.class_bars.set_counts(names, event.pseudo_label_counts, event.confident_counts)
        self._title_bars(event.epoch + 1)
        edges = np.asarray(event.confidence_bin_edges, float)
        hist = np.asarray(event.confidence_histogram, float)
        if len(edges) == len(hist) + 1 and len(hist):
            self.hist_bars.setOpts(x0=edges[:-1], x1=edges[1:], y0=np.zeros(len(hist)), y1=hist)
            self.hist_plot.setXRange(0, 1, padding=0.02)
            self.hist_plot.setYRange(0, max(1.0, hist.max()) * 1.08, padding=0)
        self._title_hist(event.epoch + 1)

    # ---- the label-free score per epoch ---------------------------------------------------
    def _build_score_plot(self) -> None:
        plot = self.score_plot
        dash = Qt.PenStyle.DashLine
        self.zero_shot_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(ZERO_SHOT_COLOUR, width=1.5,
                                                                    style=dash))
        self.refined_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(REFINED_COLOUR, width=1.5,
                                                                  style=dash))
        self.centred_line = pg.InfiniteLine(angle=0, pen=pg.mkPen(CENTRED_COLOUR, width=1.5,
                                                                  style=Qt.PenStyle.DotLine))
        for line in (self.zero_shot_line, self.refined_line, self.centred_line):
            plot.addItem(line)
            line.hide()
        self.score_curve = plot.plot([], [], pen=pg.mkPen(SCORE_COLOUR, width=LINE_WIDTH),
                                     symbol="o", symbolSize=6, symbolBrush=SCORE_COLOUR,
                                     symbolPen=None)
        self.kept_marker = pg.ScatterPlotItem(size=14, pen=pg.mkPen(KEPT_COLOUR, width=2),
                                              brush=None, symbol="o")
        plot.addItem(self.kept_marker)
        plot.setTitle(_legend_title("Label-free score (higher is better)", [
            (SCORE_COLOUR, "teacher"), (ZERO_SHOT_COLOUR, "zero-shot"),
            (REFINED_COLOUR, "refined"), (CENTRED_COLOUR, "centred"), (KEPT_COLOUR, "kept")]))
        self.score_points: list[tuple[int, float]] = []

    def show_scores(self, report) -> None:
        """Draw a ``must_gui.run_report.RunReport``'s scores (None: none): the teacher after
        each epoch, zero-shot, refined and centred zero-shot as reference lines (centred
        only where the run offered it), the kept one ringed
        (on its line when it is not a teacher, at epoch 0)."""
        teacher = report.teacher_scores() if report is not None else []
        self.score_points = teacher
        xs = [float(e) for e, _ in teacher]
        ys = [s for _, s in teacher]
        self.score_curve.setData(xs, ys)
        refs = []
        for line, value in ((self.zero_shot_line, report and report.zero_shot_score),
                            (self.refined_line, report and report.refined_score),
                            (self.centred_line, report and report.centred_score)):
            if value is None:
                line.hide()
            else:
                line.setValue(value)
                line.show()
                refs.append(value)
        kept = report.kept_point() if report is not None else None
        if kept is None:
            self.kept_marker.setData([], [])
        else:
            _kind, epoch, score = kept
            self.kept_marker.setData([float(epoch)], [score])
            refs.append(score)  # the ring stays inside the plot whatever it marks
        values = ys + refs
        epochs = max([e for e, _ in teacher] + [report.epochs if report is not None else 0, 1])
        self.score_plot.setXRange(0, epochs, padding=0.05)
        every = max(1, -(-epochs // 10))  # whole epochs only, at most about ten ticks
        self.score_plot.getAxis("bottom").setTicks(
            [[(float(i), str(i)) for i in range(0, epochs + 1, every)]])
        if values:
            low, high = min(values), max(values)
            pad = max(0.01, (high - low) * 0.15)
            self.score_plot.setYRange(low - pad, high + pad, padding=0)
        else:
            self.score_plot.setYRange(0, 1, padding=0)

    def load_history(self, run_dir: str | Path) -> int:
        """Replay a run's metrics.jsonl (a resumed or reopened run); returns steps read."""
        path = Path(run_dir) / "metrics.jsonl"
        if not path.is_file():
            return 0
        last_epoch = None
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    data = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                kind = data.pop("type", "")
                if kind == "StepMetrics":
                    try:
                        self.handle(StepMetrics(**data))
                    except TypeError:
                        continue
                elif kind == "EpochSummary":
                    last_epoch = data
                elif kind == "RunStarted" and not self.class_names:
                    self.class_names = list(data.get("class_names", []))
        if last_epoch is not None:
            with contextlib.suppress(TypeError):  # a log from another engine version
                self._show_epoch(EpochSummary(**last_epoch))
        self.redraw()
        return self.points

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        for key, curve in self.curves.items():
            s = self.series[key]
            curve.setData(s.x, s.y)

    def curve_points(self, key: str) -> int:
        """Points drawn for one series (tests check the plots really received data)."""
        x, _ = self.curves[key].getData()
        return 0 if x is None else len(x)


def _title(text: str) -> str:
    return f"<span style='color:{TEXT};font-size:10pt;font-weight:600'>{text}</span>"


def _key(colour: str, label: str) -> str:
    return (f"<span style='color:{colour};font-size:9pt'>&#9644;</span>"
            f"<span style='color:{TEXT};font-size:9pt'>&nbsp;{label}</span>")


def _keys(series: Sequence[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """(colour, label) of each (key, label, colour) series."""
    return [(colour, label) for _key_name, label, colour in series]


def _legend_title(text: str, keys: Sequence[tuple[str, str]]) -> str:
    """A title and, on its second line, a colour key for each (colour, label)."""
    return f"{_title(text)}<br>" + "&nbsp;&nbsp;".join(_key(c, label) for c, label in keys)

"""The results page as the user drives it: filters, summary, keyboard, inspector, export."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PySide6.QtCore import Qt
from results_testdata import CLASSES, make_predictions, write_pseudo_labels

from must_engine.events import ExportCheck, ExportProgress
from must_engine.export import ExportCheckError, ExportResult
from must_gui.results import ResultsPage
from must_gui.results.export_dialog import ExportDialog
from must_gui.results.prediction_model import Roles, SortKey

pytestmark = pytest.mark.gui


@pytest.fixture
def page(qtbot):
    p = ResultsPage()
    p.resize(1200, 800)
    qtbot.addWidget(p)
    p.show()
    qtbot.waitExposed(p)
    yield p
    if p.inspector_dialog is not None:
        p.inspector_dialog.close()
    p.shutdown()


@pytest.fixture
def results(tmp_path):
    pred = make_predictions(tmp_path, per_class=8, size=64)
    run = tmp_path / "run"
    write_pseudo_labels(run, pred, threshold=0.6)
    return pred, run


def _wait_inspector(qtbot, panel):
    qtbot.waitUntil(lambda: "pixels" in panel.file_label.text(), timeout=10_000)


def test_set_results_shows_everything(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    assert page.proxy.rowCount() == len(pred)
    assert page.grid.model().rowCount() == len(pred)
    text = page.summary.text()
    assert f"<b>{len(pred)}</b> of {len(pred)} images shown" in text
    assert f"{int(pred.changed().sum())} changed since zero-shot" in text
    assert f"mean confidence {pred.confidences().mean():.1%}" in text
    counts = pred.class_counts()
    assert page.class_list.topLevelItemCount() == len(CLASSES)
    for c in range(len(CLASSES)):
        item = page.class_list.topLevelItem(c)
        assert CLASSES[c] in item.text(0) and item.text(1) == str(counts[c])
    assert page.pseudo_labels is not None and page.pseudo_labels.threshold == 0.6
    # The first image is current and shown in the side panel.
    assert page.current_item() == page.shown_items()[0]
    assert page.inspector.item == page.current_item()


def test_filter_widgets_change_the_grid_and_summary(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    labels, conf, changed = pred.labels(), pred.confidences(), pred.changed()

    page.class_list.topLevelItem(1).setSelected(True)
    page.class_list.topLevelItem(3).setSelected(True)
    want = np.isin(labels, [1, 3])
    assert page.proxy.rowCount() == int(want.sum())
    assert f"<b>{int(want.sum())}</b> of" in page.summary.text()

    page.min_conf.setValue(40)
    page.max_conf.setValue(90)
    want &= (conf >= 0.4) & (conf <= 0.9)
    assert page.proxy.rowCount() == int(want.sum())

    page.changed_check.setChecked(True)
    want &= changed
    assert page.proxy.rowCount() == int(want.sum())
    assert f"{int(want.sum())} changed since zero-shot" in page.summary.text()
    assert sorted(page.shown_items().tolist()) == np.flatnonzero(want).tolist()

    page.all_classes_button.click()
    want = (conf >= 0.4) & (conf <= 0.9) & changed
    assert page.proxy.rowCount() == int(want.sum())


def test_sort_combo_orders_by_confidence(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    conf = pred.confidences()
    page.set_sort(SortKey.CONFIDENCE, descending=False)
    assert page.sort_combo.currentText() == "Confidence, low to high"
    shown = conf[page.shown_items()]
    assert (np.diff(shown) >= 0).all()
    page.sort_combo.setCurrentIndex(0)
    shown = [page.proxy.index(r, 0).data(Roles.CONFIDENCE) for r in range(page.proxy.rowCount())]
    assert shown == sorted(shown, reverse=True)


def test_keyboard_arrows_enter_and_number_keys(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    page.activateWindow()
    page.grid.setFocus()
    qtbot.waitUntil(page.grid.hasFocus, timeout=2000)
    selected = []
    page.imageSelected.connect(selected.append)

    start = page.grid.currentIndex().row()
    qtbot.keyClick(page.grid, Qt.Key.Key_Right)
    assert page.grid.currentIndex().row() == start + 1
    assert selected and selected[-1] == page.current_item()
    assert page.inspector.item == page.current_item()

    qtbot.keyClick(page.grid, Qt.Key.Key_Return)
    dialog = page.inspector_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.panel.item == page.current_item()
    # Next/previous in the window step through the grid.
    before = page.current_item()
    dialog.navigate.emit(1)
    assert page.grid.currentIndex().row() == start + 2
    assert dialog.panel.item == page.current_item() != before
    dialog.close()

    page.activateWindow()
    page.grid.setFocus()
    qtbot.waitUntil(page.grid.hasFocus, timeout=2000)
    qtbot.keyClick(page.grid, Qt.Key.Key_3)
    assert page.proxy.filter_state.classes == frozenset({2})
    assert page.proxy.rowCount() == int((pred.labels() == 2).sum())
    assert [it.text(0) for it in page.class_list.selectedItems()] == [
        page.class_list.topLevelItem(2).text(0)]
    qtbot.keyClick(page.grid, Qt.Key.Key_9)  # no 9th class: nothing changes
    assert page.proxy.filter_state.classes == frozenset({2})
    qtbot.keyClick(page.grid, Qt.Key.Key_0)
    assert page.proxy.filter_state.classes is None
    assert page.proxy.rowCount() == len(pred)


def test_digits_still_type_into_the_spin_box(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    page.activateWindow()
    page.min_conf.setFocus()
    qtbot.waitUntil(page.min_conf.hasFocus, timeout=2000)
    page.min_conf.lineEdit().selectAll()
    qtbot.keyClicks(page.min_conf.lineEdit(), "25")
    qtbot.keyClick(page.min_conf.lineEdit(), Qt.Key.Key_Return)
    assert page.min_conf.value() == 25
    assert page.proxy.filter_state.classes is None  # the digits were not shortcuts


def test_inspector_shows_top5_and_pseudo_label(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    item = 5
    assert page.select_item(item)
    panel = page.inspector
    after = panel.after_bars.rows()
    before = panel.before_bars.rows()
    assert len(after) == len(before) == min(5, len(CLASSES))
    assert after == [(n, pytest.approx(p)) for n, p in pred.top_k(item, 5)]
    assert before == [(n, pytest.approx(p)) for n, p in pred.top_k(item, 5, zero_shot=True)]
    assert after[0][0] == CLASSES[pred.labels()[item]]
    probs = pred.final_probs[item]
    label, conf = CLASSES[int(probs.argmax())], float(probs.max())
    text = panel.pseudo_label.text()
    assert f"{label} at {conf:.1%}" in text and "step 42" in text
    assert ("above the threshold of 60%: trained on this label" in text) == (conf > 0.6)
    assert ("below the threshold of 60%: not used for training" in text) == (conf <= 0.6)
    _wait_inspector(qtbot, panel)
    assert panel.preview.pixmap() is not None
    assert "64 × 64 pixels" in panel.file_label.text()

    # The image the teacher did not see in the last epoch.
    assert page.select_item(0)
    assert "did not see this image" in panel.pseudo_label.text()


def test_inspector_without_run_or_adapted_model(qtbot, page, tmp_path):
    pred = make_predictions(tmp_path, adapted=False)
    page.set_results(pred, None)
    page.select_item(1)
    assert page.inspector.after_bars.isHidden()
    assert len(page.inspector.before_bars.rows()) == 4
    assert "No training record" in page.inspector.pseudo_label.text()
    assert "zero-shot predictions" in page.summary.text()


class _FakeExport:
    """Stands in for must_engine.export.export_run; records the call."""

    def __init__(self, *, fail: bool = False):
        self.fail = fail
        self.calls = []

    def __call__(self, run_dir, fmt, out, *, predictions=None, link="copy", on_event=None,
                 should_stop=None, **kw):
        self.calls.append((run_dir, fmt, out, link))
        on_event(ExportProgress("writing"))
        check = ExportCheck(fmt, 3e-7 if not self.fail else 0.2, 1e-4, not self.fail, 8)
        on_event(check)
        if self.fail:
            raise ExportCheckError("The exported file gives different answers.", check)
        return ExportResult(out, fmt, [check], [out])


def test_export_dialog_shows_check_result(qtbot, page, results, tmp_path):
    pred, run = results
    (run / "model.safetensors").write_bytes(b"x")  # a finished run, for the dialog
    fake = _FakeExport()
    dialog = ExportDialog(run, pred, export_function=fake)
    qtbot.addWidget(dialog)
    assert dialog.format == "bundle"
    assert dialog.destination == run / "exports" / "classifier"
    dialog.set_format("onnx")
    assert dialog.destination.name == "model.onnx"
    with qtbot.waitSignal(dialog.exported, timeout=10_000):
        dialog.start_export()
    assert fake.calls[0][1] == "onnx"
    assert "passed" in dialog.check_label.text() and "3.00e-07" in dialog.check_label.text()
    assert "Exported to" in dialog.outcome_label.text()
    assert (run / "exports").is_dir()  # the default folder is made on demand
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=5000)

    failing = ExportDialog(run, pred, export_function=_FakeExport(fail=True),
                           initial_format="torchscript")
    qtbot.addWidget(failing)
    with qtbot.waitSignal(failing.failed, timeout=10_000):
        failing.start_export()
    assert "FAILED" in failing.check_label.text() and "2.00e-01" in failing.check_label.text()
    assert failing.error_box is not None and failing.error_box.isVisible()
    assert "different answers" in failing.error_box.text()
    assert "Traceback" in failing.error_box.detailedText()
    failing.error_box.close()


def test_export_dialog_without_run_sorts_copies(qtbot, page, tmp_path):
    pred = make_predictions(tmp_path, per_class=3)
    page.set_results(pred, None)
    page.sorted_copies_button.click()
    dialog = page.export_dialog
    assert dialog is not None and dialog.format == "folders"
    assert not dialog._radios["bundle"].isEnabled()
    out = tmp_path / "sorted"
    dialog.set_destination(out)
    dialog.set_link("copy")
    with qtbot.waitSignal(dialog.exported, timeout=20_000):
        dialog.start_export()
    counts = pred.class_counts()
    for c, name in enumerate(CLASSES):
        folder = out / name
        n = len(list(folder.glob("*.png"))) if folder.exists() else 0
        assert n == counts[c]
    assert (out / "mapping.csv").is_file()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=5000)
    dialog.close()


def test_export_button_emits_and_opens_dialog(qtbot, page, results):
    pred, run = results
    page.set_results(pred, run)
    page.handles_export = False
    with qtbot.waitSignal(page.exportRequested, timeout=1000):
        page.export_button.click()
    assert page.export_dialog is None
    page.handles_export = True
    page.export_button.click()
    assert page.export_dialog is not None and page.export_dialog.isVisible()
    # No model.safetensors in this run: model formats are off, predictions are offered.
    assert page.export_dialog.format == "csv"
    page.export_dialog.close()


def test_twenty_thousand_images_on_the_page(qtbot, page, tmp_path):
    pred = make_predictions(tmp_path, per_class=2, n_rows=20_000, size=64, seed=4)
    page.set_results(pred, None)
    assert page.grid.model().rowCount() == 20_000
    qtbot.waitUntil(lambda: len(page.grid.visible_rows()) > 0, timeout=5000)
    rows = page.grid.visible_rows()
    qtbot.waitUntil(lambda: all(
        page.cache.peek(page.proxy.index(r, 0).data(Roles.ABS_PATH)) is not None
        for r in rows), timeout=10_000)
    page.pick_class_by_number(2)
    assert page.proxy.rowCount() == int((pred.labels() == 1).sum())
    page.set_confidence_range(0.5, 1.0)
    want = (pred.labels() == 1) & (pred.confidences() >= 0.5)
    assert page.proxy.rowCount() == int(want.sum())
    # The layout is batched: scroll once it has reached the end.
    last = page.proxy.index(page.proxy.rowCount() - 1, 0)

    def at_end():
        page.grid.scrollTo(last)
        return page.grid.visible_rows().stop == page.proxy.rowCount()

    qtbot.waitUntil(at_end, timeout=5000)


def test_real_export_of_a_trained_run(qtbot, tmp_path, image_folder, class_names,
                                      tiny_model_dir):
    """The dialog against the real engine: a tiny run trained for one epoch, exported as a
    bundle (checked against PyTorch) and as sorted copies."""
    from must_engine.models.source import ModelSpec
    from must_engine.predict import predict_run
    from must_engine.runs import TrainJob
    from must_engine.training.trainer import train

    run = tmp_path / "run"
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."],
                   overrides={"epochs": 1, "batch_size": 8, "seed": 1})
    for _ in train(job, run, device="cpu"):
        pass
    pred = predict_run(run, device="cpu")
    page = ResultsPage()
    qtbot.addWidget(page)
    page.set_results(pred, run)
    assert page.pseudo_labels is not None  # the trainer's pseudo_labels.json was read
    page.select_item(0)
    assert "step" in page.inspector.pseudo_label.text()

    dialog = page.open_export_dialog("bundle")
    assert dialog.format == "bundle"
    with qtbot.waitSignal(dialog.exported, timeout=120_000):
        dialog.start_export()
    assert dialog.checks and dialog.checks[0].passed
    assert "passed" in dialog.check_label.text()
    assert (dialog.result.path / "card.json").is_file()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=5000)
    dialog.close()

    dialog = page.open_export_dialog("folders")
    dialog.set_link("symlink" if os.name != "nt" else "copy")
    with qtbot.waitSignal(dialog.exported, timeout=60_000):
        dialog.start_export()
    out = dialog.result.path
    assert sum(1 for p in out.rglob("*.png")) == len(pred)
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=5000)
    dialog.close()
    page.shutdown()


def test_summary_marks_predictions_of_a_stopped_run(qtbot, page, tmp_path):
    from must_engine.predict import StoppedAt

    pred = make_predictions(tmp_path)
    pred.stopped_at = StoppedAt(6, 8)
    page.set_results(pred, None)
    assert "stopped at step 6 of 8" in page.summary.text()

"""Drive the real main window offscreen: a new project, class names, the zero-shot preview,
a short training run on a tiny model, pause / resume / stop, closing during training,
errors, the demo project and the About box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from must_engine.project import Project
from must_gui.main_window import RESULTS, SETUP, START, TRAINING, MainWindow
from must_gui.pages import training_page as training_module
from must_gui.preferences import load_preferences
from tests.gui.conftest import click_button_in_message_box

pytestmark = pytest.mark.gui

CLASSES = ["red circle", "green square", "blue circle"]
LONG = 60_000


def prepare(window: MainWindow, qtbot, path: Path, images: Path, model: Path, *,
            epochs: int, batch: int = 8) -> None:
    """A project set up through the setup page's public methods."""
    window.new_project(path)
    page = window.setup_page
    page.set_folder(images)
    assert page.model_picker.use_local_folder(model)
    page.class_editor.set_names(CLASSES)
    page.plain_form.editor("epochs").setValue(epochs)
    page.plain_form.editor("batch_size").setValue(batch)
    qtbot.waitUntil(lambda: page.num_images == 24, timeout=20_000)
    assert page.problem() == ""


def start_and_wait_for_steps(window: MainWindow, qtbot, steps: int = 1) -> None:
    window.setup_page.start_button.click()
    assert window.current_page() == TRAINING
    qtbot.waitUntil(lambda: window.training_page.plots.points >= steps, timeout=LONG)


def test_full_flow_setup_preview_train_results(window, qtbot, tmp_path, monkeypatch,
                                               image_folder, tiny_model_dir):
    assert window.current_page() == START
    project_file = tmp_path / "shapes.mustproj"
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda *a, **k: (str(project_file), "")))
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page() == SETUP
    assert project_file.is_file()
    page = window.setup_page

    # The folder, typed and confirmed with Enter.
    page.folder_edit.setFocus()
    page.folder_edit.clear()
    qtbot.keyClicks(page.folder_edit, str(image_folder))
    with qtbot.waitSignal(page.folderScanned, timeout=20_000) as scanned:
        qtbot.keyClick(page.folder_edit, Qt.Key.Key_Return)
    assert scanned.args == [24]
    assert "24" in page.scan_label.text()
    assert page.model_picker.use_local_folder(tiny_model_dir)

    # Class names typed by hand: a duplicate is flagged at once and blocks the start.
    editor = page.class_editor
    qtbot.keyClicks(editor.edit, "red circle")
    for name in ("green square", "Red  Circle", "green squares"):
        qtbot.keyClick(editor.edit, Qt.Key.Key_Return)
        qtbot.keyClicks(editor.edit, name)
    editor.flush()
    assert editor.has_duplicates()
    assert editor.flagged_lines() == {0: "duplicate", 1: "near", 2: "duplicate", 3: "near"}
    assert "repeats" in editor.issues.text()
    assert not page.start_button.isEnabled()
    assert "twice" in page.status_label.text()
    editor.set_names(CLASSES)
    assert not editor.has_duplicates()
    assert page.start_button.isEnabled()

    page.plain_form.editor("epochs").setValue(2)
    page.plain_form.editor("batch_size").setValue(8)
    assert window.project.overrides == {"epochs": 2, "batch_size": 8}

    # Zero-shot preview: counts per class and thumbnails, shrunk from what the preview
    # decoded into the image cache (none decoded again).
    import must_engine.image_cache as image_cache

    decoded: list[str] = []
    real_thumbnail = image_cache.load_thumbnail
    monkeypatch.setattr(image_cache, "load_thumbnail",
                        lambda p, s: decoded.append(str(p)) or real_thumbnail(p, s))
    with qtbot.waitSignal(page.previewFinished, timeout=LONG) as preview:
        page.preview_button.click()
    predictions = preview.args[0]
    assert len(predictions) == 24
    assert sum(page.counts_chart.bars.counts) == 24
    assert page.preview_box.isVisible()
    qtbot.waitUntil(lambda: page.strips.filled_count() > 0, timeout=20_000)
    qtbot.waitUntil(lambda: not page.thumbnails_loading(), timeout=20_000)
    assert decoded == []

    # Training; then predictions, and the window moves on to the results.
    with qtbot.waitSignal(window.training_page.resultsReady, timeout=LONG) as done:
        page.start_button.click()
        assert window.current_page() == TRAINING
    assert window.current_page() == RESULTS
    plots = window.training_page.plots
    plots.redraw()
    assert plots.points == 6  # 24 images / batch 8 = 3 steps, 2 epochs
    assert plots.curve_points("loss_total") == 6
    assert plots.curve_points("lr") == 6
    assert sum(plots.class_bars.counts) == 24
    assert plots.epochs_seen == 2
    assert "Epoch 2 of 2" in window.training_page.stats.text()
    # What the run kept, through the real worker thread: a score per epoch, the kept card,
    # and the same above the results.
    assert [e for e, _ in plots.score_points] == [1, 2]
    kept = window.training_page.report.kept
    assert kept is not None and kept.label in window.training_page.summary.kept_card.text()
    assert kept.label in window.results.page.kept_banner.text()
    run_dir = Path(done.args[1])
    assert run_dir.name == "run-001"  # the run the preview prepared was trained
    saved = json.loads(project_file.read_text(encoding="utf-8"))
    assert saved["runs"] == ["shapes_runs/run-001"]
    assert saved["predictions"] == "shapes_runs/run-001/predictions.npz"
    assert (run_dir / "predictions.npz").is_file()
    assert (run_dir / "model.safetensors").is_file()

    # The browser in the real window: every image, a class filter, the inspector, an export.
    results = window.results.page
    assert len(results.shown_items()) == 24
    results.cache.pixmap(str(predictions.root / predictions.paths[0]))
    qtbot.waitUntil(lambda: results.cache.delivered > 0, timeout=20_000)
    assert decoded == []  # the grid's thumbnails came from the image cache too
    first_class = predictions.class_names[0]
    expected = int((results.predictions.labels() == 0).sum())
    qtbot.keyClick(results, Qt.Key.Key_1)  # number keys pick a class filter
    assert len(results.shown_items()) == expected
    assert all(results.predictions.labels()[i] == 0 for i in results.shown_items())
    qtbot.keyClick(results, Qt.Key.Key_0)
    assert len(results.shown_items()) == 24
    inspector = results.open_inspector()
    assert inspector is not None and inspector.isVisible()
    assert inspector.panel.item == results.current_item()
    inspector.close()
    dialog = results.open_export_dialog("csv")
    dialog.set_destination(tmp_path / "predictions.csv")
    with qtbot.waitSignal(dialog.exported, timeout=LONG):
        dialog.start_export()
    rows = (tmp_path / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 25 and rows[0].startswith("path,label,confidence")
    assert f"p_{first_class}" in rows[0]
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=5000)
    dialog.close()

    # Reopening the project goes straight back to the results.
    window.save_project()
    again = MainWindow(load_preferences())
    qtbot.addWidget(again)
    assert str(project_file) == again.preferences.recent_projects[0]
    again.open_project(project_file)
    qtbot.waitUntil(lambda: again.current_page() == RESULTS, timeout=LONG)
    assert again.setup_page.class_editor.names() == CLASSES
    again.close()


def test_pause_resume_and_stop_keep_the_checkpoint(window, qtbot, tmp_path, image_folder,
                                                   tiny_model_dir):
    prepare(window, qtbot, tmp_path / "p.mustproj", image_folder, tiny_model_dir, epochs=200)
    page = window.training_page
    start_and_wait_for_steps(window, qtbot)

    page.pause_button.click()
    qtbot.waitUntil(lambda: page.state == training_module.PAUSED, timeout=LONG)
    assert page.pause_button.text().replace("&", "") == "Resume"
    points = page.plots.points
    qtbot.wait(400)
    assert page.plots.points == points  # nothing trains while paused

    page.pause_button.click()
    qtbot.waitUntil(lambda: page.plots.points > points + 2, timeout=LONG)
    assert page.state == training_module.TRAINING

    with qtbot.waitSignal(page.runEnded, timeout=LONG) as ended:
        page.stop_button.click()
    run_dir, stopped = ended.args
    assert stopped
    assert (Path(run_dir) / "checkpoint.pt").is_file()
    assert json.loads((Path(run_dir) / "run.json").read_text())["status"] == "stopped"
    assert page.resume_button.isVisible()
    assert "checkpoint" in page.status.text().lower()

    # Resuming goes on from the saved step, with the earlier curve kept.
    before = page.plots.points
    page.resume_button.click()
    qtbot.waitUntil(lambda: page.plots.points > before + 1, timeout=LONG)
    with qtbot.waitSignal(page.runEnded, timeout=LONG):
        page.stop()


def test_closing_during_training_asks_then_stops_cleanly(window, qtbot, tmp_path, monkeypatch,
                                                         image_folder, tiny_model_dir):
    prepare(window, qtbot, tmp_path / "p.mustproj", image_folder, tiny_model_dir, epochs=200)
    start_and_wait_for_steps(window, qtbot)
    run_dir = Path(window.project.current_run)

    monkeypatch.setattr(QMessageBox, "exec", click_button_in_message_box("Cancel"))
    window.close()
    assert window.isVisible()
    assert window.training_page.is_training()

    monkeypatch.setattr(QMessageBox, "exec", click_button_in_message_box("Stop and quit"))
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=LONG)
    assert not window.training_page.is_busy()
    assert (run_dir / "checkpoint.pt").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"
    assert Project.load(tmp_path / "p.mustproj").current_run == str(run_dir)


def test_training_errors_are_shown_with_the_detail(window, qtbot, tmp_path, monkeypatch,
                                                   image_folder, tiny_model_dir):
    prepare(window, qtbot, tmp_path / "p.mustproj", image_folder, tiny_model_dir, epochs=1)

    def broken_train(*_args, **_kwargs):
        yield from ()
        raise RuntimeError("The GPU caught fire; try the CPU.")

    import must_engine.training.trainer as trainer

    monkeypatch.setattr(trainer, "train", broken_train)
    page = window.training_page
    with qtbot.waitSignal(page.failed, timeout=LONG) as failed:
        window.setup_page.start_button.click()
    assert failed.args == ["The GPU caught fire; try the CPU."]
    box = page.error_box
    assert box.isVisible()
    assert box.text() == "The GPU caught fire; try the CPU."
    assert "Traceback" in box.detailedText() and "broken_train" in box.detailedText()
    assert "failed" in page.status.text()
    box.close()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=LONG)


def test_demo_project_opens_from_the_start_page(window, qtbot, monkeypatch, image_folder,
                                                tiny_model_dir, tmp_path):
    from must_engine import demo_files

    monkeypatch.setattr(demo_files, "demo_available", lambda: True)
    monkeypatch.setattr(demo_files, "demo_images_dir", lambda: image_folder)
    monkeypatch.setattr(demo_files, "demo_model_dir", lambda: tiny_model_dir)
    monkeypatch.setattr(demo_files, "demo_class_names", lambda: list(CLASSES))
    monkeypatch.setattr(demo_files, "demo_templates", lambda: [])
    window.start_page.demo_button.setEnabled(True)
    window.start_page.demo_button.click()
    project = window.project
    assert project is not None and project.name == "MUST demo"
    assert Path(project.path).is_relative_to(Path(tmp_path).parent) or project.path.exists()
    assert project.overrides == demo_files.demo_settings_overrides()
    assert project.model == f"local-dir:{tiny_model_dir}"
    assert window.current_page() == SETUP
    assert window.setup_page.class_editor.names() == CLASSES
    qtbot.waitUntil(lambda: window.setup_page.num_images == 24, timeout=20_000)
    assert window.setup_page.plain_form.editor("epochs").value() == 10


def test_about_dialog_and_keyboard_navigation(window, qtbot, tmp_path):
    window.about_action.trigger()
    dialog = window.about_dialog
    assert dialog.isVisible()
    text = dialog.text()
    for name in ("MUST Studio", "PyTorch", "open_clip", "Qt", "PySide6", "pyqtgraph",
                 "Device in use", "Model cache"):
        assert f"{name}:" in text
    assert "not installed" not in dialog.value_labels["PyTorch"].text()
    dialog.close()

    # Without a project only the start page can be reached; with one, Ctrl+2 opens setup.
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page() == START
    window.new_project(tmp_path / "k.mustproj")
    window.show_page(START)
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.current_page() == SETUP
    assert window.windowIcon().isNull() is False


def test_preview_offline_without_a_cached_model_says_what_to_do(window, qtbot, tmp_path,
                                                                image_folder, monkeypatch):
    """The default model is not cached here and downloads are off: a clear error, no hang."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    window.new_project(tmp_path / "offline.mustproj")
    page = window.setup_page
    assert page.model_picker.model() == ("ViT-B-32", "laion2b_s34b_b79k")
    page.set_folder(image_folder)
    page.class_editor.set_names(CLASSES)
    qtbot.waitUntil(lambda: page.num_images == 24, timeout=20_000)
    page.preview_button.click()
    qtbot.waitUntil(lambda: getattr(page, "_error_box", None) is not None, timeout=LONG)
    box = page._error_box
    assert box.isVisible()
    assert "model cache" in box.text() or "download" in box.text().lower()
    assert box.detailedText()
    box.close()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=LONG)
    assert not list((tmp_path / "offline_runs").glob("run-*"))  # nothing half-made is left


def test_download_progress_bar(qtbot):
    from must_engine.events import DownloadProgress
    from must_gui.widgets.download_bar import DownloadBar

    bar = DownloadBar()
    qtbot.addWidget(bar)
    bar.show()
    bar.handle(DownloadProgress("laion/CLIP/open_clip_model.safetensors", 150_000_000,
                                600_000_000))
    assert bar.isVisible()
    assert bar.bar.value() == 250
    assert bar.bar.format() == "150 MB of 600 MB"
    assert "open_clip_model.safetensors" in bar.label.text()
    bar.handle(DownloadProgress("x/y", 600_000_000, 600_000_000))
    assert not bar.isVisible()


def test_setup_page_is_usable_from_the_keyboard(window, qtbot, tmp_path):
    window.new_project(tmp_path / "keys.mustproj")
    page = window.setup_page
    page.folder_edit.setFocus()
    seen = []
    for _ in range(60):
        widget = window.focusWidget()
        if widget is not None:
            seen.append(widget)
        qtbot.keyClick(widget or window, Qt.Key.Key_Tab)
    for wanted in (page.folder_edit, page.folder_button, page.class_editor.edit,
                   page.template_combo, page.model_picker.combo, page.model_picker.local_button,
                   page.device_picker, page.plain_form.editor("epochs"),
                   page.advanced_section.header):
        assert wanted in seen, wanted.objectName() or wanted.text()
    # Ctrl+Enter starts, Alt+P previews: both are wired as shortcuts or mnemonics.
    assert page.start_button.text().startswith("&")
    assert "&P" in page.preview_button.text()


def test_plot_area_keeps_its_size_whatever_the_run_state(window, qtbot, tmp_path):
    """A resized plot area redraws every plot from scratch (a ~300 ms stall at each run's
    end, measured): the rows above the plots must not change height with the run's state,
    its buttons or a one- or two-line status message."""
    window.stack.setCurrentIndex(TRAINING)  # no project needed to look at the page
    page = window.training_page
    assert page.isVisible()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(b"")  # makes "Show results" visible
    qtbot.waitUntil(lambda: page.plots.height() > 0)
    heights = set()
    for state, message in [(training_module.PREPARING, "Loading the model…"),
                           (training_module.TRAINING, "Epoch 1 done in 2 s: 80% confident."),
                           (training_module.PAUSED, "Paused at step 3. " * 12),
                           (training_module.STOPPING, ""),
                           (training_module.PREDICTING, "Classifying every image"),
                           (training_module.IDLE, "Training finished.")]:
        page.run_dir = run_dir if state == training_module.IDLE else None
        page.status.setText(message)
        page._set_state(state)
        qtbot.wait(20)  # let the layout settle
        heights.add(page.plots.height())
    assert page.results_button.isVisible()
    assert len(heights) == 1, heights


def test_stop_before_the_worker_starts_still_ends_the_run_cleanly(window, qtbot, tmp_path,
                                                                  image_folder, tiny_model_dir):
    # The worker starts START_DELAY_MS after the page shows; a Stop in that moment must
    # still end the run, with the window back to idle and nothing left running.
    prepare(window, qtbot, tmp_path / "p.mustproj", image_folder, tiny_model_dir, epochs=200)
    page = window.training_page
    window.setup_page.start_button.click()
    assert page.is_training() and not page.workers()[0].is_running()
    page.stop()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=LONG)
    assert page.state == training_module.IDLE
    assert page.plots.points == 0
    assert page.status.text() == "Stopped before training began."

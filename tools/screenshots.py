"""Render a screenshot of each screen of MUST Studio into a folder, for review and the README.

Run it under a display; on a headless machine under Xvfb:

    xvfb-run -s "-screen 0 1400x900x24" python tools/screenshots.py [OUT_DIR]

OUT_DIR defaults to docs/screenshots/. The script walks the real window through the start
page, the setup (folder and classes), the class-name workbench, the zero-shot preview,
training in progress, the results, the About box and the results' Check views: a
spot-check answered from the demo's answer key, the confusion matrices, the changed
predictions, a correction in the results and one in the inspector window, and a short run
whose class-name warning shows beside the plots. It uses the
embedded demo when it is installed and otherwise made-up pictures with a tiny random model
(the Check views need the demo's answer key). ``--only 09 10`` writes only the screenshots
whose names start so. Settings go to a temporary folder, never to the user's own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WINDOW_SIZE = (1360, 860)


def wait_until(app, condition: Callable[[], bool], timeout: float = 180.0,
               what: str = "the app") -> None:
    from PySide6.QtCore import QEventLoop

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out waiting for {what}.")
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)


def settle(app, seconds: float = 0.4) -> None:
    """Let layouts, timers and repaints catch up before a grab."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


ONLY: tuple[str, ...] = ()  # name prefixes to write (--only); empty: all


def shoot(app, widget, path: Path) -> None:
    if ONLY and not path.name.startswith(ONLY):
        return
    settle(app)
    image = widget.grab()
    if not image.save(str(path)):
        raise OSError(f"Could not write {path}.")
    print(f"wrote {path}", flush=True)


def example_data(scratch: Path) -> tuple[Path, Path, list[str]]:
    """Images, model folder and class names: the demo if installed, else made-up ones."""
    from must_engine import demo_files

    if demo_files.demo_available():
        # A copy, so the pictures show a user's kind of path, not where the app is installed.
        import shutil

        images = scratch / "Photos"
        shutil.copytree(demo_files.demo_images_dir(), images)
        return images, demo_files.demo_model_dir(), demo_files.demo_class_names()
    from must_engine.sandbox.world import CLASS_NAMES, write_folder
    from must_engine.testing import write_tiny_model

    images = scratch / "holiday photos"
    write_folder(images, 12, "source", 0, by_class_subfolders=True, image_size=96)
    (images / "notes.jpg").write_text("not really a picture")  # shows the skipped list
    model = write_tiny_model(scratch / "tiny-model")
    return images, model, list(CLASS_NAMES[:6])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the example run")
    parser.add_argument("--default-settings", action="store_true",
                        help="train the demo pictures with the settings a new project gets "
                             "(the auto preset: its probe and its schedule) instead of the "
                             "demo project's own")
    parser.add_argument("--only", nargs="+", default=[], metavar="PREFIX",
                        help="write only the screenshots whose names start so (e.g. 09 10)")
    args = parser.parse_args(argv)
    global ONLY
    ONLY = tuple(args.only)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    scratch = Path(tempfile.mkdtemp(prefix="must-screens-"))
    os.environ["MUST_STUDIO_CONFIG_DIR"] = str(scratch / "config")
    os.environ["MUST_STUDIO_DATA_DIR"] = str(scratch / "data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from must_gui.app import create_application
    from must_gui.main_window import RESULTS, SETUP, START, TRAINING, MainWindow
    from must_gui.preferences import load_preferences

    app = create_application([sys.argv[0]])
    images, model, classes = example_data(scratch)
    window = MainWindow(load_preferences())
    window.resize(*WINDOW_SIZE)
    window.show()

    # A couple of earlier projects, so the start page shows its recent list.
    for name in ("Birds in the garden", "Shop products"):
        window.new_project(scratch / "projects" / f"{name}.mustproj")
    window.new_project(scratch / "projects" / "Shapes.mustproj")
    window.show_page(START)
    shoot(app, window, out / "01-start.png")

    page = window.setup_page
    window.show_page(SETUP)
    page.set_folder(images)
    page.model_picker.use_local_folder(model)
    page.class_editor.set_names(classes)
    from must_engine import demo_files

    if args.default_settings:
        window.project.templates = demo_files.demo_templates() if \
            demo_files.demo_available() else []
        page.set_project(window.project)
    elif demo_files.demo_available():
        # The demo's own settings (what File -> Open demo project uses): the defaults are
        # for a pretrained ViT, and this tiny model would hardly move in a few epochs.
        overrides = dict(demo_files.demo_settings_overrides())
        window.project.preset = overrides.pop("preset", window.project.preset)
        overrides.pop("device", None)
        window.project.templates = demo_files.demo_templates()
        window.project.overrides = {**overrides, "epochs": args.epochs}
        page.set_project(window.project)
    else:
        page.plain_form.editor("epochs").setValue(args.epochs)
        page.plain_form.editor("batch_size").setValue(16)
    wait_until(app, lambda: page.num_images is not None and not page.model_picker.is_loading()
               and not page.device_picker.is_loading(), what="the folder scan and model list")
    page.scroll.verticalScrollBar().setValue(0)
    shoot(app, window, out / "02-setup.png")

    page.advanced_section.set_expanded(True)
    settle(app)
    page.scroll.ensureWidgetVisible(page.advanced_section, 0, 0)
    shoot(app, window, out / "03-setup-advanced.png")
    page.advanced_section.set_expanded(False)

    if demo_files.demo_available():
        shoot_workbench(app, page, classes, out)

    done = []
    page.previewFinished.connect(done.append)
    page.start_preview()
    wait_until(app, lambda: bool(done), what="the zero-shot preview")
    wait_until(app, lambda: not page.thumbnails_loading(), what="the thumbnails")
    shoot(app, window, out / "04-zero-shot-preview.png")

    training = window.training_page
    results = []
    training.resultsReady.connect(lambda p, r: results.append(p))
    page.request_start()
    batch = window.project.overrides.get("batch_size", 32)
    steps_per_epoch = max(1, (page.num_images or 1) // batch)
    wait_until(app, lambda: training.plots.epochs_seen >= 2
               and training.plots.points >= 2 * steps_per_epoch + 2,
               what="two epochs of training")
    training.pause()
    wait_until(app, lambda: training.state == "paused", what="the pause")
    shoot(app, window, out / "05-training.png")
    training.resume()
    wait_until(app, lambda: bool(results), timeout=600, what="the end of training")
    wait_until(app, lambda: window.current_page() == RESULTS, what="the results page")
    settle(app, 2.0)  # thumbnails load in the background
    shoot(app, window, out / "06-results.png")

    # The finished run: which classifier it kept and why, and the details behind it.
    window.show_page(TRAINING)
    shoot(app, window, out / "14-training-finished.png")
    details = training.summary.open_details()
    shoot(app, details, out / "15-run-details.png")
    details.close()

    window.show_about()
    dialog = window.about_dialog
    settle(app)
    shoot(app, dialog, out / "07-about.png")
    dialog.close()

    if demo_files.demo_available():
        shoot_check_views(app, window, images, scratch, out)
        if not ONLY or any(o.startswith("18") for o in ONLY):
            shoot_run_warning(app, window, classes, out)

    window._quit_after_stop = True
    window.close()
    window.wait_for_workers(30_000)
    return 0


def shoot_workbench(app, page, classes: list[str], out: Path) -> None:
    """09: the class-name workbench, with a synonym typed in and previewed (not saved, so
    the run below is the demo's own)."""
    from must_gui.trust.workbench_dialog import SYNONYMS

    dialog = page.open_workbench()
    wait_until(app, lambda: dialog.result is not None, what="the class-name workbench")
    dialog.table.item(classes.index("moon"), SYNONYMS).setText("crescent")
    dialog.preview()
    shoot(app, dialog, out / "09-class-name-workbench.png")
    dialog.reject()


def shoot_check_views(app, window, images: Path, scratch: Path, out: Path) -> None:
    """10-13 and 17: the results' Check views on the demo run, answered from its answer key the way
    a person who knows the pictures would answer."""
    import shutil

    from must_engine import demo_files
    from must_engine.evaluate import read_labels_csv
    from must_gui.main_window import RESULTS

    window.show_page(RESULTS)
    results = window.results.page
    trust = results.trust
    pred = results.predictions
    key = scratch / "answer_key.csv"  # a user's own labels file, beside the photos
    shutil.copy(demo_files.demo_answer_key(), key)
    truth = read_labels_csv(key, pred.class_names)

    spot = trust.open_spot_check()
    wait_until(app, lambda: spot.isVisible(), what="the spot-check window")
    for _ in range(30):
        spot.class_buttons[truth[spot.current]].click()
        settle(app, 0.05)
    settle(app, 1.0)  # the next picture loads
    shoot(app, spot, out / "10-spot-check.png")
    spot.close()

    confusion = trust.measure_with_labels(key)
    shoot(app, confusion, out / "11-confusion-matrix.png")
    confusion.close()

    changes = trust.open_changes()
    shoot(app, changes, out / "12-changed-predictions.png")
    changes.close()

    # A correction: the least sure wrong prediction nobody has answered yet.
    labels = pred.labels()
    answered = set(trust.labels.labels)
    wrong = [i for i in range(len(pred)) if labels[i] != truth[pred.paths[i]]
             and pred.paths[i] not in answered]
    item = min(wrong, key=lambda i: float(pred.confidences()[i]))
    results.select_item(item)
    settle(app, 1.0)
    trust.correction.combo.setCurrentText(pred.class_names[truth[pred.paths[item]]])
    trust.correction.apply_button.click()
    settle(app, 2.0)  # thumbnails
    shoot(app, window, out / "13-results-check-and-correction.png")

    # The inspector window on the next wrong one, corrected there.
    later = [i for i in wrong if i != item]
    results.select_item(later[0])
    dialog = results.open_inspector()
    box = trust.window_correction
    box.combo.setCurrentText(pred.class_names[truth[pred.paths[later[0]]]])
    box.apply_button.click()
    settle(app, 1.5)
    shoot(app, dialog, out / "17-inspector-window.png")
    dialog.close()


def shoot_run_warning(app, window, classes: list[str], out: Path) -> None:
    """18: a real warning beside the plots: "house" renamed "hut", a name this small model
    never learnt, in a short run; no image of it passes the threshold."""
    from must_gui.main_window import RESULTS, SETUP, TRAINING

    page = window.setup_page
    window.show_page(SETUP)
    page.class_editor.set_names(["hut" if c == "house" else c for c in classes])
    window.project.overrides = {**window.project.overrides, "epochs": 3}
    page.set_project(window.project)
    training = window.training_page
    finished = []
    training.resultsReady.connect(lambda p, r: finished.append(r))
    # set_project scans the folder again; Start waits for that
    wait_until(app, lambda: not page.problem(), what="the folder scan")
    page.request_start()
    wait_until(app, lambda: bool(finished), timeout=600, what="the end of the short run")
    wait_until(app, lambda: window.current_page() == RESULTS, what="the results page")
    window.show_page(TRAINING)
    wait_until(app, lambda: bool(training.warnings.text()), what="the run's warning")
    shoot(app, window, out / "18-run-warning.png")


if __name__ == "__main__":
    sys.exit(main())

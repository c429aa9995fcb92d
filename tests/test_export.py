"""Exports: every format is written, reloaded in a fresh process and checked against the app's
predictions (``predict_run``) on the same images; the bundle README runs; exports are atomic.

Tolerances on probabilities: bundle 1e-5 (same weights, same code), TorchScript and ONNX 1e-4
(other kernels), CSV/JSON lines 1e-6 (six decimals written).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import must_engine
from must_engine.classifier import ClassifierError, ImagePrediction, load_classifier
from must_engine.events import ExportCheck, ExportProgress
from must_engine.export import (
    DEFAULT_NAMES,
    TOLERANCES,
    ExportCheckError,
    ExportError,
    export_predictions,
    export_run,
)
from must_engine.export.predictions_out import (
    MAPPING_FILE,
    class_folder_names,
    safe_folder_name,
)
from must_engine.models.source import ModelSpec
from must_engine.predict import Predictions, predict_run
from must_engine.runs import MODEL_FILE, TrainJob
from must_engine.training.trainer import train
from must_engine.views import Preprocess, eval_view

ROOT = Path(__file__).resolve().parents[1]
TOL = {"bundle": 1e-5, "torchscript": 1e-4, "onnx": 1e-4, "csv": 1e-6, "jsonl": 1e-6}


# ---- shared fixtures: one adapted run, the app's predictions, one export per format --------

@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory, image_folder, class_names, tiny_model_dir):
    run_dir = tmp_path_factory.mktemp("export-run") / "run"
    job = TrainJob(image_folder, class_names, ModelSpec.parse(str(tiny_model_dir)),
                   templates=["a photo of a {}."],
                   overrides={"epochs": 1, "batch_size": 8, "seed": 1})
    for _ in train(job, run_dir, device="cpu"):
        pass
    assert (run_dir / MODEL_FILE).is_file()
    return run_dir


@pytest.fixture(scope="module")
def app_predictions(adapted_run) -> Predictions:
    return predict_run(adapted_run, device="cpu")


@pytest.fixture(scope="module")
def exports(adapted_run, app_predictions, tmp_path_factory):
    """Every format exported once; the events each export emitted."""
    out = tmp_path_factory.mktemp("exports")
    results, events = {}, {}
    targets = {"bundle": out / "my-bundle", "torchscript": out / "model.pt",
               "onnx": out / "model.onnx", "csv": out / "predictions.csv",
               "jsonl": out / "predictions.jsonl", "folders": out / "sorted"}
    for fmt, dest in targets.items():
        seen = []
        kwargs = {"spot_check": {"labelled_images": 12, "accuracy": 0.75}} if fmt == "bundle" \
            else {}
        results[fmt] = export_run(adapted_run, fmt, dest, predictions=app_predictions,
                                  on_event=seen.append, **kwargs)
        events[fmt] = seen
    return results, events


def image_paths(preds: Predictions) -> list[str]:
    return [str(Path(preds.root) / p) for p in preds.paths]


def fresh_python(code: str, *args: str, cwd: Path | None = None) -> str:
    """Run ``code`` in a new interpreter (nothing shared with this process); its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


# ---- every format, reloaded in a fresh process ---------------------------------------------

BUNDLE_CODE = """
import json, sys
from must_engine import load_classifier
clf = load_classifier(sys.argv[1])
print(json.dumps(clf.predict_proba(json.loads(sys.argv[2])).tolist()))
"""

# Deployment-style: the input spec beside the file says how to preprocess.
SPEC_PREPROCESS = """
import json, sys
import numpy as np
from must_engine.images import load_rgb
from must_engine.views import Preprocess, eval_view
spec = json.load(open(sys.argv[1] + ".json"))
view = eval_view(Preprocess.from_dict(spec["preprocess"]))
x = np.stack([view(load_rgb(p)).numpy() for p in json.loads(sys.argv[2])]).astype("float32")
"""

TORCHSCRIPT_CODE = SPEC_PREPROCESS + """
import torch, warnings
warnings.simplefilter("ignore")
model = torch.jit.load(sys.argv[1])
with torch.no_grad():
    print(json.dumps(model(torch.from_numpy(x)).numpy().tolist()))
"""

ONNX_CODE = SPEC_PREPROCESS + """
import onnxruntime as ort
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(json.dumps(sess.run(["probabilities"], {"images": x})[0].tolist()))
"""


@pytest.mark.parametrize("fmt,code", [
    pytest.param("bundle", BUNDLE_CODE, id="bundle"),
    pytest.param("torchscript", TORCHSCRIPT_CODE, id="torchscript"),
    pytest.param("onnx", ONNX_CODE, id="onnx"),
])
def test_model_formats_reload_in_a_fresh_process(exports, app_predictions, fmt, code):
    results, events = exports
    result = results[fmt]
    paths = image_paths(app_predictions)
    got = np.array(last_json(fresh_python(code, str(result.path), json.dumps(paths))))
    want = app_predictions.probs
    diff = float(np.abs(got - want).max())
    print(f"{fmt}: max abs difference vs predict_run = {diff:.3g} over {len(paths)} images")
    assert got.shape == want.shape
    assert diff <= TOL[fmt]
    assert (got.argmax(1) == want.argmax(1)).all()
    # The export's own check passed, was reported as an event, and is in the result.
    (check,) = result.checks
    assert check.passed and check.max_abs_diff <= TOL[fmt] and check.samples >= 8
    assert check in [e for e in events[fmt] if isinstance(e, ExportCheck)]
    assert [e.stage for e in events[fmt] if isinstance(e, ExportProgress)][-1] == "done"


def test_prediction_files_read_in_a_fresh_process(exports, app_predictions):
    results, _ = exports
    code = """
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="", encoding="utf-8")))
names = [c[2:] for c in rows[0] if c.startswith("p_")]
csv_probs = [[float(r["p_" + n]) for n in names] for r in rows]
lines = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
jl_probs = [[l["probabilities"][n] for n in names] for l in lines]
print(json.dumps({"names": names, "paths": [r["path"] for r in rows], "columns": list(rows[0]),
                  "csv": csv_probs, "jsonl": jl_probs}))
"""
    out = last_json(fresh_python(code, str(results["csv"].path), str(results["jsonl"].path)))
    preds = app_predictions
    assert out["names"] == preds.class_names and out["paths"] == preds.paths
    assert out["columns"] == preds.columns()  # the columns of `must predict`
    for fmt in ("csv", "jsonl"):
        assert np.abs(np.array(out[fmt]) - preds.probs).max() <= TOL[fmt]


def test_bundle_readme_example_runs(exports, app_predictions, tmp_path):
    bundle = exports[0]["bundle"].path
    readme = (bundle / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    shutil.copytree(bundle, tmp_path / bundle.name)
    for i, path in enumerate(image_paths(app_predictions)[:2], start=1):
        Image.open(path).convert("RGB").save(tmp_path / f"photo{i}.jpg", quality=95)
    lines = fresh_python(code, cwd=tmp_path).strip().splitlines()
    names = app_predictions.class_names
    assert lines[0] == str(names)
    for line in lines[1:3]:
        assert any(line.startswith(n + " ") for n in names), line


def test_bundle_contents_and_card(exports, adapted_run, app_predictions):
    from safetensors import safe_open

    from must_engine.export.card import sha256_of
    from must_engine.runs import open_run

    bundle = exports[0]["bundle"].path
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "card.json",
                                                        "model.safetensors"]
    with safe_open(str(bundle / "model.safetensors"), "pt") as f:
        keys = set(f.keys())  # noqa: SIM118
    assert "classifier" in keys and "logit_scale" in keys
    assert not any(k == "mask_token" or k.startswith("decoder.") for k in keys)
    card = json.loads((bundle / "card.json").read_text(encoding="utf-8"))
    run = open_run(adapted_run)
    assert card["class_names"] == run.class_names
    assert card["templates"] == ["a photo of a {}."]
    assert card["architecture"] == run.architecture
    assert card["preprocess"]["image_size"] == 32 and card["preprocess"]["mean"] == [0.5] * 3
    assert card["preprocess"]["interpolation"] == "bicubic"
    assert card["model"]["licence_note"]
    assert card["engine_version"] == must_engine.__version__
    assert card["training"]["settings"]["epochs"] == 1
    assert card["thresholds"]["conf_threshold"] == run.settings.conf_threshold
    assert card["data"] == {"num_images": 24, "num_skipped": 0, "folder_name": "photos"}
    assert card["weights"]["sha256"] == sha256_of(bundle / "model.safetensors")
    figures = card["figures"]
    assert figures["spot_check"] == {"labelled_images": 12, "accuracy": 0.75}
    lf = figures["label_free"]
    assert lf["images_scored"] == 24
    assert lf["mean_confidence"] == pytest.approx(app_predictions.confidences().mean(), abs=1e-6)
    assert 0 <= lf["changed_fraction"] <= 1 and 0 <= lf["confident_fraction"] <= 1
    assert sum(lf["class_counts"].values()) == sum(lf["zero_shot_class_counts"].values()) == 24
    assert sum(lf["last_epoch_teacher"]["pseudo_label_counts"].values()) == 24


def test_spec_files_beside_model_files(exports):
    results, _ = exports
    for fmt in ("torchscript", "onnx"):
        result = results[fmt]
        spec_file = result.path.with_name(result.path.name + ".json")
        assert result.files == [result.path, spec_file]
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        assert spec["input"]["shape"] == ["batch", 3, 32, 32]
        assert spec["output"]["name"] == "probabilities"
        assert spec["class_names"] == ["red circle", "green square", "blue circle"]
        assert spec["check"]["max_abs_diff"] == result.checks[0].max_abs_diff
    assert json.loads(results["onnx"].path.with_name("model.onnx.json").read_text())["opset"] \
        == 17


def test_onnx_has_a_dynamic_batch_axis(exports):
    import onnx

    model = onnx.load(str(exports[0]["onnx"].path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch" and not dim.dim_value


# ---- load_classifier -----------------------------------------------------------------------

def test_load_classifier_accepts_images_paths_and_tensors(exports, adapted_run, app_predictions):
    bundle = exports[0]["bundle"].path
    clf = must_engine.load_classifier(bundle)  # the lazy top-level export
    from_run = load_classifier(adapted_run)
    paths = image_paths(app_predictions)[:5]
    by_path = clf.predict_proba(paths)
    assert np.abs(by_path - app_predictions.probs[:5]).max() <= 1e-5
    assert np.array_equal(by_path, from_run.predict_proba(paths))
    pil = [Image.open(p) for p in paths]
    assert np.abs(clf.predict_proba(pil) - by_path).max() <= 1e-6
    batch = torch.stack([clf.preprocess(im) for im in pil])
    assert np.abs(clf.predict_proba(batch) - by_path).max() <= 1e-6
    assert np.abs(clf.predict_proba(batch[0]) - by_path[:1]).max() <= 1e-6
    # Another batch size sums in another order: float32 differs by about 1e-6 on some CPUs.
    assert np.abs(clf.predict_proba(paths, batch_size=2) - by_path).max() <= 1e-5

    results = clf.predict(paths[0], top_k=2)
    (one,) = results
    assert isinstance(one, ImagePrediction)
    assert one.label == clf.class_names[int(by_path[0].argmax())]
    # one image alone vs five in a batch: float32 sums differ in the last bits, as above
    assert one.confidence == pytest.approx(float(by_path[0].max()), abs=1e-6)
    assert len(one.top_k) == 2 and one.top_k[0] == (one.label, one.confidence)
    assert sum(one.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert clf.input_settings == Preprocess(32, (0.5,) * 3, (0.25,) * 3, "bicubic")


def test_load_classifier_errors(exports, tmp_path):
    clf = load_classifier(exports[0]["bundle"].path)
    with pytest.raises(ClassifierError, match="shape"):
        clf.predict(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ClassifierError, match="not found"):
        clf.predict(tmp_path / "missing.jpg")
    with pytest.raises(ClassifierError, match="neither"):
        load_classifier(tmp_path)


# ---- errors and atomicity ------------------------------------------------------------------

@pytest.fixture()
def unfinished_run(adapted_run, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(adapted_run, copy)
    (copy / MODEL_FILE).unlink()
    return copy


def test_clear_errors(adapted_run, unfinished_run, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="has no adapted model yet"):
        export_run(unfinished_run, "bundle", tmp_path / "b")
    with pytest.raises(ExportError, match="choose one of"):
        export_run(adapted_run, "pickle", tmp_path / "x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_run(adapted_run, "bundle", full)
    with pytest.raises(ExportError, match="not empty"):
        export_run(adapted_run, "folders", full)
    assert (full / "keep.txt").read_text() == "mine"
    existing = tmp_path / "p.csv"
    existing.write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_run(adapted_run, "csv", existing)
    assert existing.read_text() == "mine"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were missing
    with pytest.raises(ExportError, match=re.escape("pip install 'must-studio[onnx]'")):
        export_run(adapted_run, "onnx", tmp_path / "m.onnx")


def test_file_formats_into_a_folder_and_overwrite(adapted_run, app_predictions, tmp_path):
    result = export_run(adapted_run, "csv", tmp_path, predictions=app_predictions)
    assert result.path == tmp_path / DEFAULT_NAMES["csv"]
    result.path.write_text("old")
    export_run(adapted_run, "csv", result.path, predictions=app_predictions, overwrite=True)
    assert result.path.read_text(encoding="utf-8").startswith("path,label,")
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is a fine bundle destination
    export_run(adapted_run, "bundle", empty, predictions=app_predictions)
    assert (empty / "card.json").is_file()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


def test_interrupted_bundle_leaves_nothing(adapted_run, app_predictions, tmp_path, monkeypatch):
    import must_engine.export.bundle as bundle_mod

    def fail(*_a, **_k):
        raise KeyboardInterrupt  # after model.safetensors and card.json were written

    monkeypatch.setattr(bundle_mod, "readme_text", fail)
    with pytest.raises(KeyboardInterrupt):
        export_run(adapted_run, "bundle", tmp_path / "b", predictions=app_predictions)
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []


def test_interrupted_onnx_leaves_nothing(adapted_run, tmp_path, monkeypatch):
    import must_engine.export.onnx_export as onnx_mod

    def half_then_fail(model, tmp, example):
        Path(tmp).write_bytes(b"half an onnx file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx_mod, "write_onnx", half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(adapted_run, "onnx", tmp_path / "m.onnx")
    assert sorted(os.listdir(tmp_path)) == []


def test_failed_check_fails_the_export_with_numbers(adapted_run, tmp_path, monkeypatch):
    import must_engine.export.torchscript as ts_mod

    monkeypatch.setattr(ts_mod, "TOLERANCE", -1.0)  # nothing can pass
    seen = []
    with pytest.raises(ExportCheckError, match="max abs difference") as info:
        export_run(adapted_run, "torchscript", tmp_path / "m.pt", on_event=seen.append)
    assert not info.value.check.passed
    assert info.value.check in seen
    assert sorted(os.listdir(tmp_path)) == []  # neither the file nor its spec


def test_interrupted_sorting_leaves_nothing(adapted_run, app_predictions, tmp_path,
                                            monkeypatch):
    import must_engine.export.predictions_out as po

    calls = []

    def copy_then_fail(src, dst):
        calls.append(src)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        shutil.copyfile(src, dst)

    monkeypatch.setattr(po.shutil, "copy2", copy_then_fail)
    with pytest.raises(ExportError, match="free space"):
        export_run(adapted_run, "folders", tmp_path / "sorted", predictions=app_predictions)
    assert sorted(os.listdir(tmp_path)) == []
    assert all(Path(p).is_file() for p in image_paths(app_predictions))  # sources untouched


# ---- sorted folders --------------------------------------------------------------------------

def test_folder_names_are_safe_and_distinct():
    assert safe_folder_name("a/b\\c") == "a_b_c"
    assert safe_folder_name("CON") == "_CON"
    assert safe_folder_name("nul.txt") == "_nul.txt"
    assert safe_folder_name("what?.  ") == "what_"
    assert safe_folder_name("..") == "_"
    assert safe_folder_name(".hidden") == "_hidden"
    assert safe_folder_name("") == "_"
    assert safe_folder_name("x" * 300) == "x" * 100
    assert class_folder_names(["Cat", "cat", "a/b", "a_b", "mapping.csv"],
                              reserved=[MAPPING_FILE]) == [
        "Cat", "cat_2", "a_b", "a_b_2", "mapping.csv_2"]


LINKS = ["copy", "hardlink"] + (["symlink"] if os.name != "nt" else [])


@pytest.mark.parametrize("link", LINKS)
def test_sorted_folders(tmp_path, link):
    photos = tmp_path / "photos"
    names = ["x/img.png", "y/img.png", "y/IMG.png", "z/other.png"]
    for i, rel in enumerate(names):
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        (photos / rel).write_bytes(b"picture %d" % i)
    classes = ["a/b", "CON", "cat"]
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.7, 0.2]],
                     dtype=np.float32)
    preds = Predictions(photos, names, classes, probs[:, ::-1].copy(), probs)
    seen = []
    result = export_run(_fake_finished_run(tmp_path), "folders", tmp_path / "sorted",
                        predictions=preds, link=link, on_event=seen.append)
    out = result.path
    assert sorted(p.name for p in out.iterdir()) == ["_CON", "a_b", MAPPING_FILE]
    assert sorted(p.name for p in (out / "a_b").iterdir()) == ["IMG_3.png", "img.png",
                                                               "img_2.png"]
    assert result.summary["per_folder"] == {"a_b": 3, "_CON": 1}
    with (out / MAPPING_FILE).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["a/b", "a/b", "a/b", "CON"]
    for rel, row in zip(names, rows, strict=True):
        placed = out / row["file"]
        assert placed.read_bytes() == (photos / rel).read_bytes()
        assert Path(row["source"]) == (photos / rel).resolve()
        if link == "symlink":
            assert placed.is_symlink()
        if link == "hardlink":
            assert placed.stat().st_ino == (photos / rel).stat().st_ino
    assert ExportProgress("sorting", 4, 4) in seen
    assert all((photos / rel).read_bytes() == b"picture %d" % i for i, rel in enumerate(names))


def test_long_cjk_class_names_sort_into_folders(tmp_path, capsys):
    """90 CJK characters are 270 UTF-8 bytes, over the 255-byte name limit of ext4/APFS."""
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["a.png", "b.png", "c.png"]
    for i, rel in enumerate(names):
        (photos / rel).write_bytes(b"picture %d" % i)
    long_a = "長" * 89 + "猫"
    long_b = "長" * 89 + "犬"  # the same first 66 characters as long_a
    classes = [long_a, long_b, "dog"]
    folders = class_folder_names(classes)
    assert all(len(f.encode("utf-8")) <= 255 for f in folders)
    assert len({f.casefold() for f in folders}) == 3
    probs = np.eye(3, dtype=np.float32)
    preds = Predictions(photos, names, classes, probs, probs)
    run = _fake_finished_run(tmp_path)
    result = export_run(run, "folders", tmp_path / "sorted", predictions=preds)
    assert sorted(result.summary["per_folder"].values()) == [1, 1, 1]
    with (result.path / MAPPING_FILE).open(newline="", encoding="utf-8") as f:
        assert [r["label"] for r in csv.DictReader(f)] == classes


def test_unique_file_names_stay_within_the_name_limit(tmp_path):
    from must_engine.export.predictions_out import _unique_file_name

    name = "写" * 83 + "ab.png"  # 255 bytes: fits, but with "_2" it would not
    taken: set[str] = set()
    assert _unique_file_name(name, taken) == name
    second = _unique_file_name(name, taken)
    assert second.endswith("_2.png") and len(second.encode("utf-8")) <= 255
    (tmp_path / second).write_bytes(b"ok")


def _fake_finished_run(tmp_path: Path) -> Path:
    """Sorting given predictions needs only a run that has finished."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "finished"}))
    (run / MODEL_FILE).write_bytes(b"")
    return run


def test_predictions_computed_when_not_given(adapted_run, app_predictions, tmp_path):
    result = export_run(adapted_run, "jsonl", tmp_path / "p.jsonl", device="cpu")
    lines = [json.loads(x) for x in result.path.read_text(encoding="utf-8").splitlines()]
    assert [x["path"] for x in lines] == app_predictions.paths


def test_eval_view_matches_classifier_preprocess(exports):
    clf = load_classifier(exports[0]["bundle"].path)
    img = Image.new("RGB", (50, 40), (10, 200, 30))
    assert torch.equal(clf.preprocess(img), eval_view(clf.input_settings)(img))


def test_bundle_of_a_run_whose_images_moved(adapted_run, tmp_path):
    moved = tmp_path / "moved-run"
    shutil.copytree(adapted_run, moved)
    info = json.loads((moved / "run.json").read_text(encoding="utf-8"))
    info["job"]["images"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(info), encoding="utf-8")
    result = export_run(moved, "bundle", tmp_path / "new" / "deeper" / "bundle")
    (check,) = result.checks
    assert check.passed and check.details["inputs"] == "random noise"
    card = json.loads((result.path / "card.json").read_text(encoding="utf-8"))
    assert "images_scored" not in card["figures"]["label_free"]
    assert "last_epoch_teacher" in card["figures"]["label_free"]


def test_export_predictions_without_a_run(app_predictions, tmp_path):
    result = export_predictions(app_predictions, "csv", tmp_path / "a" / "p.csv")
    assert result.path.read_text(encoding="utf-8").startswith("path,label,")
    with pytest.raises(ExportError, match="already exists"):
        export_predictions(app_predictions, "csv", result.path)
    with pytest.raises(ExportError, match="model formats need a finished training run"):
        export_predictions(app_predictions, "onnx", tmp_path / "m.onnx")


def test_stated_tolerances_are_the_ones_used():
    from must_engine.export import bundle, onnx_export, torchscript

    assert TOLERANCES == {"bundle": bundle.TOLERANCE, "torchscript": torchscript.TOLERANCE,
                          "onnx": onnx_export.TOLERANCE}

"""The ``must`` command line: train, predict, eval, export, demo, models, devices.

Every command exits non-zero with one clear line on bad input, checked before torch is
imported where the check needs no model. Exit statuses: 0 done, 1 failed, 2 bad input (or a
file problem to fix: disk full, no permission), 3 training stopped early with its checkpoint
kept (Ctrl-C, SIGTERM, SIGHUP), 128 + N killed by signal N outside training.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from must_engine.version import __version__

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_STOPPED = 3
# Signals that stop a run like Ctrl-C (SIGHUP: the terminal closed). Windows has no SIGHUP.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, n))

# Settings that get a friendlier flag name than --field-name.
_FLAG_NAMES = {"conf_threshold": "threshold"}
# Settings with a dedicated flag elsewhere, or not meant for the command line.
_SKIP_FIELDS = {"use_fair", "use_mim", "use_align", "preset"}


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP outside training: unwinds (so staged files are removed) and exits
    with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    from must_engine.settings import FIELD_HELP, PRESET_NAMES, MustSettings

    group = parser.add_argument_group("method settings (default: chosen from the folder and "
                                      "model, see --preset)")
    group.add_argument("--preset", choices=PRESET_NAMES, default=None,
                       help="published settings row to start from (default: auto, by folder size)")
    for f in dataclasses.fields(MustSettings):
        if f.name in _SKIP_FIELDS:
            continue
        flag = "--" + _FLAG_NAMES.get(f.name, f.name).replace("_", "-")
        kind = {int: int, float: float, str: str, bool: _parse_bool, "int": int,
                "float": float, "str": str, "bool": _parse_bool}.get(f.type, str)
        group.add_argument(flag, dest=f"set_{f.name}", type=kind, default=None,
                           metavar=f.name.upper(),
                           help=f"{FIELD_HELP.get(f.name, '')} (base default {f.default!r})")
    group.add_argument("--no-fair", action="store_true", help="turn the fairness loss off")
    group.add_argument("--no-mim", action="store_true", help="turn masked image modelling off")
    group.add_argument("--no-align", action="store_true",
                       help="turn global-local feature alignment off")


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _overrides(args: argparse.Namespace) -> dict:
    out = {k[4:]: v for k, v in vars(args).items() if k.startswith("set_") and v is not None}
    if args.no_fair:
        out["use_fair"] = False
    if args.no_mim:
        out["use_mim"] = False
    if args.no_align:
        out["use_align"] = False
    if args.preset:
        out["preset"] = args.preset
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="must",
        description="Adapt a CLIP zero-shot classifier to a folder of unlabelled images with "
                    "Masked Unsupervised Self-Training (MUST).")
    p.add_argument("--version", action="version", version=f"must {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="adapt a model to a folder of images")
    t.add_argument("images", type=Path, help="folder of unlabelled images (searched recursively)")
    names = t.add_mutually_exclusive_group()
    names.add_argument("--classes", help='class names, comma-separated: "cat,dog,bird"')
    names.add_argument("--classes-file", type=Path, help="text file, one class name a line")
    t.add_argument("--model", help="open_clip model: ViT-B-32, hf-hub:ORG/REPO, local-dir:PATH "
                                   "or a model folder")
    t.add_argument("--pretrained", default="",
                   help="pretrained tag (e.g. laion2b_s34b_b79k) or a checkpoint file")
    t.add_argument("--templates-file", type=Path,
                   help="prompt templates, one a line, '{}' for the class name")
    t.add_argument("--template-set", help="a shipped template set: openai-imagenet, simple, photo")
    t.add_argument("--out", type=Path, help="run folder to write (default: ./must-run-<time>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the stopped run in --out from its last checkpoint")
    t.add_argument("--labels", type=Path, metavar="CSV",
                   help="labels you know (CSV with columns path,label; paths relative to the "
                        "image folder): fixed labels for this run, like corrections in the app")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N data-parallel processes on this machine (one per GPU), "
                        "started through torchrun")
    _settings_flags(t)

    pr = sub.add_parser("predict", help="score images with a run's zero-shot and adapted models")
    pr.add_argument("run", type=Path, help="run folder written by `must train`")
    pr.add_argument("images", type=Path, help="folder of images to score")
    pr.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--batch-size", type=int, default=0,
                    help="images per batch (default: chosen from the device)")
    pr.add_argument("--image-cache", default=None, metavar="IMAGE_CACHE",
                    help="decoded-image cache: auto, off or a folder (default: the run's)")
    pr.add_argument("--quiet", action="store_true")
    pr.add_argument("--nproc", type=int, default=1, metavar="N",
                    help="share the images among N processes on this machine (one per GPU), "
                         "started through torchrun; one CSV is written")

    e = sub.add_parser("eval", help="accuracy of predictions against class-named subfolders")
    e.add_argument("predictions", type=Path, help="CSV written by `must predict`")
    e.add_argument("images", type=Path, nargs="?",
                   help="the same folder, with one subfolder per class")
    e.add_argument("--labels", type=Path, help="a CSV of path,label instead of subfolders")
    e.add_argument("--confusion", action="store_true",
                   help="also print the confusion matrices before and after adaptation")

    x = sub.add_parser("export", help="export an adapted model or its predictions")
    x.add_argument("run", type=Path)
    x.add_argument("--format", default="bundle",
                   choices=["bundle", "torchscript", "onnx", "csv", "jsonl", "folders"])
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--link", default="copy", choices=["copy", "symlink", "hardlink"],
                   help="for --format folders: copy the images or link them")
    x.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file (folders must still be new or empty)")

    d = sub.add_parser("demo", help="run the whole pipeline offline on the embedded demo")
    d.add_argument("--out", type=Path, help="folder for the demo run (default: a temp folder)")
    d.add_argument("--epochs", type=int, help="override the demo's number of epochs")
    d.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo's predictions.csv in --out")
    d.add_argument("--quiet", action="store_true")

    m = sub.add_parser("models", help="list open_clip pretrained ViTs and what is cached")
    m.add_argument("--cached", action="store_true", help="only models already downloaded")

    sub.add_parser("devices", help="list the devices training can use")
    return p


# ---- progress ----------------------------------------------------------------------------
EXPORT_STAGES = {"loading": "Loading the adapted model",
                 "predicting": "Classifying the run's images",
                 "writing": "Writing the export", "checking": "Checking it against PyTorch",
                 "sorting": "Sorting the images into class folders"}
LINE_EVERY_PERCENT = 10  # off a terminal, counted work prints a line this often
def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """A terminal progress bar for engine events (plain lines when not on a terminal)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.download = None
        self.counted: tuple[str, int] | None = None  # (what, total) of the count shown
        self.last_line_percent = -1
        self.export_stage = ""

    def __call__(self, event) -> None:
        from must_engine import events as ev

        if self.quiet:
            return
        if isinstance(event, ev.Status):
            self._write(event.message)
        elif isinstance(event, ev.DownloadProgress):
            self._download(event)
        elif isinstance(event, ev.RunStarted):
            self._close()
            self._write(f"Training on {event.num_images} images, {len(event.class_names)} "
                        f"classes, {event.epochs} epochs on {event.device}")
            total = event.epochs * event.steps_per_epoch
            if self.tty:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=event.start_step, unit="step",
                                dynamic_ncols=True, file=sys.stderr)
        elif isinstance(event, ev.StepMetrics):
            if self.bar is not None:
                self.bar.set_postfix_str(
                    f"ep {event.epoch + 1} loss {event.loss_total:.3f} conf "
                    f"{event.confident_fraction:.0%} {event.images_per_second:.1f} img/s",
                    refresh=False)
                self.bar.update(1)
            elif (event.step + 1) % max(1, event.steps_per_epoch) == 0:
                self._write(f"step {event.step + 1}/{event.total_steps} loss "
                            f"{event.loss_total:.4f} confident {event.confident_fraction:.0%} "
                            f"{event.images_per_second:.1f} img/s")
        elif isinstance(event, ev.EpochSummary):
            self._write(f"epoch {event.epoch + 1}/{event.epochs}: mean teacher confidence "
                        f"{event.mean_confidence:.3f}, above threshold "
                        f"{event.confident_fraction:.0%}")
        elif isinstance(event, ev.RunWarning):
            self._write(f"warning: {event.message} {event.suggestion}".rstrip())
        elif isinstance(event, ev.SettingsProbed):
            scores = ", ".join(f"{c['name']} {c['score']:.3f}" for c in event.candidates)
            chosen = ", ".join(f"{k}={v}" for k, v in event.settings.items()) or "as is"
            self._write(f"Probe on {event.images} images (label-free score): {scores}. "
                        f"Training with: {event.chosen} ({chosen}).")
        elif isinstance(event, ev.TimeEstimate):
            self._write(f"Expected training time: about {_duration(event.seconds)} "
                        f"({event.epochs} epochs, {event.total_steps} steps at "
                        f"{event.seconds_per_step:.2f} s a step on {event.device}, measured).")
        elif isinstance(event, ev.ClassifierScored):
            self._write(f"label-free score of the {event.label}: {event.score:.3f} (zero-shot "
                        f"{event.zero_shot_score:.3f}; kept so far: {event.kept})")
        elif isinstance(event, ev.ClassifierKept):
            self._write(f"Keeping the {event.label}: {event.reason}.")
        elif isinstance(event, ev.RunFinished):
            self._close()
            word = "Stopped" if event.stopped else "Finished"
            self._write(f"{word} at step {event.step}/{event.total_steps} in "
                        f"{event.seconds:.1f} s")
        elif isinstance(event, ev.PredictionProgress):
            self._count("Classifying images", "img", event.done, event.total)
        elif isinstance(event, ev.ExportProgress):
            label = EXPORT_STAGES.get(event.stage)
            if label is None:
                return
            if event.stage != self.export_stage:
                self.export_stage = event.stage
                self._write(label)
            if event.total:
                self._count(label, "img", event.done, event.total)

    def _count(self, what: str, unit: str, done: int, total: int) -> None:
        """A bar on a terminal; else a line at every LINE_EVERY_PERCENT, so that a log
        (output redirected, or a CI job) still shows the work going on."""
        if total <= 0:
            return
        if self.counted != (what, total):
            self._close()
            self.counted, self.last_line_percent = (what, total), -1
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=unit, desc=what, file=sys.stderr)
            self.bar.n = done
            self.bar.refresh()
        else:
            percent = done * 100 // total
            mark = percent - percent % LINE_EVERY_PERCENT
            if mark > self.last_line_percent:
                self.last_line_percent = mark
                self._write(f"{what}: {done}/{total} ({percent}%)")
        if done >= total:
            self._close()
            self.counted = None

    def _download(self, event) -> None:
        if not self.tty:
            if event.total_bytes and event.done_bytes >= event.total_bytes:
                self._write(f"Downloaded {event.what} ({event.total_bytes / 1e6:.0f} MB)")
            return
        from tqdm import tqdm

        if self.download is None or self.download.desc != event.what:
            if self.download is not None:
                self.download.close()
            self.download = tqdm(total=event.total_bytes or None, unit="B", unit_scale=True,
                                 desc=event.what, file=sys.stderr)
        self.download.n = event.done_bytes
        self.download.refresh()
        if event.total_bytes and event.done_bytes >= event.total_bytes:
            self.download.close()
            self.download = None

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- commands ----------------------------------------------------------------------------
def _read_text_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise CliError(f"The {what} {path} is not UTF-8 text (byte {exc.start}); save it as "
                       "plain text, one entry a line.") from exc
    except IsADirectoryError as exc:
        raise CliError(f"The {what} {path} is a folder; give a text file.") from exc


def _class_names(args) -> list[str]:
    from must_engine.classes import check_class_names, parse_class_names, read_class_file

    if args.classes_file is not None:
        names = read_class_file(args.classes_file)
    elif args.classes:
        names = parse_class_names(args.classes)
    else:
        raise CliError("Give the class names with --classes \"a,b,c\" or --classes-file FILE.")
    return check_class_names(names)


def _templates(args) -> list[str]:
    from must_engine.classes import check_templates, template_sets

    if args.templates_file is not None:
        if not args.templates_file.is_file():
            raise CliError(f"Templates file {args.templates_file} was not found.")
        lines = _read_text_lines(args.templates_file, "templates file")
        return check_templates(lines)
    if args.template_set:
        sets = template_sets()
        if args.template_set not in sets:
            raise CliError(f"Unknown template set '{args.template_set}'; choose one of "
                           f"{', '.join(sets)}.")
        return sets[args.template_set]
    return []


def _run_training(job, out: Path, *, resume: bool, quiet: bool) -> int:
    """Train; Ctrl-C, SIGTERM and SIGHUP stop after the current step with a checkpoint
    (a second Ctrl-C aborts at once). Returns the exit status."""
    from must_engine import events as ev
    from must_engine.training.control import TrainControl
    from must_engine.training.trainer import train

    control = TrainControl()
    progress = Progress(quiet)

    # Under torchrun a Ctrl-C reaches every process and then the launcher sends SIGTERM:
    # both ask for the checkpointed stop, and the second signal must not abort it.
    launched = _under_torchrun()

    def on_stop_signal(signum, frame):
        if control.stop_requested and signum == signal.SIGINT and not launched:
            raise KeyboardInterrupt
        if control.stop_requested:
            return
        if _is_rank0():  # said even with --quiet: the user must know
            _say(progress, f"{signal.Signals(signum).name}: stopping after this step and "
                 "keeping a checkpoint (Ctrl-C again to abort at once)...")
        control.stop()

    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, on_stop_signal)
        except ValueError:  # not the main thread: no signal handling
            break
    stopped = False
    try:
        for event in train(job, out, control=control, resume=resume, on_event=progress):
            progress(event)
            if isinstance(event, ev.RunFinished):
                stopped = event.stopped
            elif isinstance(event, ev.RunStarted) and event.start_step == 0 and not quiet:
                _report_skipped(out)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        if _is_rank0():
            _say(progress, f"Stopped with a checkpoint. Resume with: must train {job.images} "
                 f"--out {out} --resume")
        return EXIT_STOPPED
    return 0


def _say(progress: Progress, text: str) -> None:
    if progress.quiet:
        print(text, file=sys.stderr, flush=True)
    else:
        progress._write(text)


def _is_rank0() -> bool:
    """True in a plain process, and in torchrun's first process (the one that reports)."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _under_torchrun() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _launch_torchrun(args, out: Path | None) -> int:
    """``must train|predict --nproc N``: the same command again, N times, under PyTorch's
    launcher (``--standalone``: one machine; several machines go through torchrun's own
    flags). ``out``: the --out to add when the user gave none."""
    import subprocess

    argv = list(args.argv)
    kept: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            kept.append(a)
    if args.out is None and out is not None:
        kept += ["--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={args.nproc}", "-m", "must_engine", *kept]
    # Ctrl-C reaches torchrun and its processes, which stop with a checkpoint; this process
    # only waits for them (subprocess.call would kill torchrun on KeyboardInterrupt).
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        code = subprocess.Popen(cmd).wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return code if code in (0, EXIT_USAGE) else EXIT_FAILED


def _report_skipped(out: Path) -> None:
    """List the images the scan left out (run.json keeps them all)."""
    import json

    try:
        skipped = json.loads((out / "run.json").read_text(encoding="utf-8"))["data"]["skipped"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for item in skipped[:20]:
        print(f"skipped {item.get('path')}: {item.get('reason')}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"... and {len(skipped) - 20} more skipped images (listed in {out}/run.json)",
              file=sys.stderr)


def _check_image_folder(images: Path) -> None:
    """The image folder exists, is a folder, can be read and holds image files (no decode)."""
    import os

    from must_engine.images import FolderPathTooLongError, has_image_suffix, is_name_too_long

    try:
        found = images.exists()
    except OSError as exc:
        if is_name_too_long(exc):
            raise FolderPathTooLongError(images) from exc
        raise
    if not found:
        raise CliError(f"Image folder {images} was not found; check the path.")
    if not images.is_dir():
        raise CliError(f"{images} is a file, not a folder; give the folder that holds the "
                       "images.")
    if not os.access(images, os.R_OK | os.X_OK):
        raise CliError(f"The image folder {images} cannot be read (permission denied); check "
                       "its permissions.")
    for _dirpath, _dirs, files in os.walk(images):
        if any(has_image_suffix(f) for f in files):
            return
    raise CliError(f"No image files in {images} (looked for jpg, png, webp, bmp, tiff, gif, "
                   "in subfolders too).")


def _check_settings(overrides: dict) -> None:
    from must_engine.settings import check_values

    check_values({k: v for k, v in overrides.items() if k != "preset"})


def _precheck(spec) -> None:
    """The model is a ViT open_clip knows, before the images are scanned."""
    from must_engine.models.source import check_is_vit, read_model_config

    check_is_vit(read_model_config(spec), spec.label)


def cmd_train(args) -> int:
    # Everything that needs no model is checked before torch is imported (seconds).
    out = args.out
    overrides = _overrides(args)
    _check_settings(overrides)
    _check_nproc(args)
    if args.nproc > 1:
        if out is None and args.resume:
            raise CliError("--resume needs --out RUN, the folder of the run to continue.")
        return _launch_torchrun(args, out or Path(
            f"must-run-{_dt.datetime.now():%Y%m%d-%H%M%S}"))
    if out is None and _under_torchrun():
        # Each process would pick its own time-stamped folder.
        raise CliError("Under torchrun, name the run folder with --out.")
    if args.resume:
        if out is None:
            raise CliError("--resume needs --out RUN, the folder of the run to continue.")
        if args.labels is not None:
            raise CliError("A resumed run keeps the labels it started with; drop --labels (or "
                           "start a new run with them).")
        if not (out / "run.json").is_file():
            raise CliError(f"{out} holds no run to resume (no run.json); give the --out folder "
                           "of a stopped run.")
        names = _class_names(args) if (args.classes or args.classes_file) else []
        templates = _templates(args)
        from must_engine.models.source import ModelSpec
        from must_engine.runs import TrainJob, open_run

        run = open_run(out)
        spec = ModelSpec.parse(args.model, args.pretrained) if args.model else run.model_spec
        job = TrainJob(args.images, names, spec, templates, overrides=overrides)
        code = _run_training(job, out, resume=True, quiet=args.quiet)
        if _is_rank0():
            print(out)
        return code
    _check_image_folder(args.images)
    names = _class_names(args)
    templates = _templates(args)
    known = _known_labels(args.labels, args.images, names) if args.labels is not None else None
    if not args.model:
        raise CliError("Name a model with --model (e.g. --model ViT-B-32 --pretrained "
                       "laion2b_s34b_b79k), or a local model folder.")
    if out is None:
        out = Path(f"must-run-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} is a file; choose a folder name for --out.")
    if (out / "run.json").exists():
        raise CliError(f"{out} already holds a run; add --resume to continue it, or choose "
                       "another --out.")
    from must_engine.models.source import ModelSpec
    from must_engine.runs import TrainJob

    spec = ModelSpec.parse(args.model, args.pretrained)
    _precheck(spec)
    job = TrainJob(args.images, names, spec, templates, overrides=overrides)
    if known is not None:
        from must_engine.trust.user_labels import write_run_labels

        # The trainer reads them from the run folder, as it does the app's corrections.
        write_run_labels(out, known, names)
    code = _run_training(job, out, resume=False, quiet=args.quiet)
    if _is_rank0():
        print(out)
    return code


def _known_labels(csv_path: Path, images: Path, names: list[str]):
    """``--labels``: the CSV's labels as a label store, every path checked against the folder
    (a path that matches no image would silently train on nothing)."""
    from must_engine.evaluate import read_labels_csv
    from must_engine.trust.user_labels import UserLabels

    if csv_path.is_dir():
        raise CliError(f"The labels file {csv_path} is a folder; give a CSV with the columns "
                       "path,label.")
    known = read_labels_csv(csv_path, names)
    if not known:
        raise CliError(f"{csv_path} holds no labels; add rows of path,label or drop --labels.")
    missing = sorted(p for p in known if not (images / p).is_file())
    if missing:
        raise CliError(f"{csv_path} names {len(missing)} image(s) that are not in {images} "
                       f"(first: {missing[0]}); give paths relative to the image folder.")
    store = UserLabels()
    for path, index in known.items():
        store.set_label(path, names[index], "labels")
    return store


def _check_csv_out(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise CliError(f"{path} is a folder; give a file name for --out, e.g. "
                       f"{path / 'predictions.csv'}.")
    if path.exists() and not overwrite:
        raise CliError(f"{path} already exists; add --overwrite to replace it, or choose "
                       "another --out.")


def _check_nproc(args) -> None:
    if args.nproc < 1:
        raise CliError("--nproc takes a number of processes, 1 or more.")
    if args.nproc > 1 and _under_torchrun():
        raise CliError("Already running under torchrun; drop --nproc (torchrun's "
                       "--nproc_per_node sets the process count).")


def cmd_predict(args) -> int:
    if not args.run.is_dir():
        raise CliError(f"Run folder {args.run} was not found; check the path.")
    if not (args.run / "run.json").is_file():
        raise CliError(f"{args.run} is not a MUST run folder (no run.json); give the folder "
                       "that `must train --out` wrote.")
    _check_image_folder(args.images)
    _check_csv_out(args.out, args.overwrite)
    if args.batch_size < 0:
        raise CliError(f"--batch-size must be 0 (automatic) or more (got {args.batch_size}).")
    _check_nproc(args)
    if args.nproc > 1:
        return _launch_torchrun(args, None)
    from must_engine.distributed import env_from_launcher
    from must_engine.predict import predict_run

    env = env_from_launcher()
    if env is None:
        preds = predict_run(args.run, args.images, device=args.device,
                            batch_size=args.batch_size, on_event=Progress(args.quiet),
                            image_cache=args.image_cache)
    else:  # under torchrun: each process scores its share, the first writes the CSV
        from must_engine.distributed import start

        group = start(env)
        try:
            preds = predict_run(args.run, args.images, device=args.device,
                                batch_size=args.batch_size,
                                on_event=Progress(args.quiet or not group.is_main),
                                image_cache=args.image_cache, distributed=group)
        finally:
            group.close()
        if not group.is_main:
            return 0
    if preds.stopped_at is not None:
        print(f"note: {args.run} was {preds.stopped_at}; the label columns hold its teacher "
              "at that step (resume with `must train --resume` to finish).", file=sys.stderr)
    elif preds.probs is None:
        print(f"note: {args.run} has not trained yet; the label columns hold the zero-shot "
              "predictions.", file=sys.stderr)
    preds.write_csv(args.out)
    for s in preds.failed:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    print(f"Wrote {len(preds)} predictions to {args.out}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    from must_engine.evaluate import evaluate_csv

    result = evaluate_csv(args.predictions, args.images, labels=args.labels)
    print(result.table())
    if args.confusion:
        for title, zero in (("zero-shot", True), ("adapted", False)):
            print(f"\nconfusion matrix, {title} (rows: true class, columns: predicted)")
            print(result.confusion_table(zero_shot=zero))
    return 0


def cmd_export(args) -> int:
    from must_engine.export import export_run

    result = export_run(args.run, args.format, args.out, link=args.link,
                        overwrite=args.overwrite, on_event=Progress(False))
    for check in result.checks:
        print(f"{check.format}: max abs difference {check.max_abs_diff:.2e} "
              f"(tolerance {check.tolerance:.0e}) on {check.samples} images: "
              f"{'ok' if check.passed else 'FAILED'}", file=sys.stderr)
    if "stopped_at" in result.summary:
        print(f"note: {args.run} was {result.summary['stopped_at']}; the export holds its "
              "teacher at that step.", file=sys.stderr)
    print(result.path)
    return 0


def cmd_demo(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise CliError(f"--epochs must be at least 1 (got {args.epochs}).")
    if args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            raise CliError(f"{args.out} is a file; choose a folder for --out.")
        if (args.out / "predictions.csv").exists() and not args.overwrite:
            raise CliError(f"{args.out / 'predictions.csv'} already exists; add --overwrite to "
                           "replace it, or choose another --out.")
    from must_engine.demo import run_demo

    report = run_demo(args.out, epochs=args.epochs, on_event=Progress(args.quiet))
    print(report.summary())
    return 0


def cmd_models(args) -> int:
    from must_engine.models.catalog import cache_location, pretrained_vits

    entries = [e for e in pretrained_vits() if e.cached or not args.cached]
    width = max((len(e.model) for e in entries), default=5)
    tag_w = max((len(e.pretrained) for e in entries), default=3)
    print(f"{'model':<{width}}  {'pretrained':<{tag_w}}  {'params':>7}  {'download':>9}  cached")
    for e in entries:
        cached = f"yes ({e.cached_bytes / 1e6:.0f} MB)" if e.cached else "no"
        print(f"{e.model:<{width}}  {e.pretrained:<{tag_w}}  {e.params_millions:>6.0f}M  "
              f"{e.download_bytes / 1e9:>7.2f}GB  {cached}")
    print(f"\nCache: {cache_location()} (set HF_HOME to move it; HF_HUB_OFFLINE=1 to stay "
          "offline)")
    return 0


def cmd_devices(args) -> int:
    from must_engine.devices import list_devices

    for d in list_devices():
        print(f"{d.choice:<8} {d.label}")
    return 0


COMMANDS = {"train": cmd_train, "predict": cmd_predict, "eval": cmd_eval, "export": cmd_export,
            "demo": cmd_demo, "models": cmd_models, "devices": cmd_devices}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --nproc to start again
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    # Every user error the engine raises is a ValueError (RunError, ModelError, ...); none of
    # their modules is imported here, so a bad argument is refused before torch loads.
    user_errors = (CliError, FileNotFoundError, NotADirectoryError, ValueError)
    previous = _unwind_on_terminate()
    try:
        return COMMANDS[args.command](args)
    except user_errors as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"must {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # disk full, permission denied, read-only: the user can fix it
        print(f"must {args.command}: error: {_describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"must {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"must {args.command}: stopped by {signal.Signals(exc.signum).name}",
              file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # anything else: one line, and the detail for a bug report
        trainer = sys.modules.get("must_engine.training.trainer")
        if trainer is not None and isinstance(exc, trainer.TrainingError):
            print(f"must {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        import traceback

        traceback.print_exc()
        print(f"must {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _unwind_on_terminate() -> dict:
    """SIGTERM/SIGHUP raise ``Terminated`` so ``finally`` blocks remove staged files
    (training replaces this with a clean stop). Returns the handlers it replaced."""

    def handler(signum, frame):
        raise Terminated(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        if sig == signal.SIGINT:
            continue  # already KeyboardInterrupt
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break
    return previous


def _describe_os_error(exc: OSError) -> str:
    from must_engine.io_utils import DiskFullError

    if isinstance(exc, DiskFullError):
        return str(exc)
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    hint = {13: "check the permissions", 30: "choose a writable place",
            28: "free some disk space and try again"}.get(exc.errno or 0, "check the path")
    return f"{what}{where}; {hint}."


if __name__ == "__main__":
    sys.exit(main())

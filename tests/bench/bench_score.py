"""Offline study of the label-free score: dump every classifier a run scores, then compare
score formulas against the answer key in seconds.

Not part of the test run. Two steps:

  dump  runs `must train` with no flags (the runs of bench_adaptation.py) and saves, per run,
        every candidate classifier the engine scored (zero-shot, each refined zero-shot
        anchor tried, the EMA teacher after each epoch, the probe's short trials apart): its
        classifier, logit scale and the scored images' features on the evaluation view and
        on two other views (mirrored, a strong augmentation; the same seeded views for every
        candidate), plus the zero-shot features and the answer key (kept only here, never
        given to the engine).
  eval  loads the dumps and, for each score formula in ``FORMULAS`` ("current" is
        quality.quality_score as the code stands, "logged" the score the run logged when it
        was dumped), reports per set the within-run Spearman rho between score and true
        accuracy and the *regret*: accuracy lost by keeping the best-scored candidate
        instead of the truly best one (what keep-best would hand back, the refinement's
        anchor choice included), averaged over seeds. ``--refined-teachers each|last`` adds
        the teacher with its head refined on its own features (each anchor), after every
        epoch or after the last.

The dumped runs were trained under the score in force at the time (the probe picks settings
by it), so ``eval`` measures which classifier a run would keep, given how it trained.

Formulas are chosen on development sets only; ``eval`` leaves held-out sets out unless
``--held-out`` is given.

examples:
  python tests/bench/bench_score.py dump --sets sandbox,faded,noisy-blur --seeds 3 \\
      --per-class 20 --out /tmp/score --cache CACHE
  python tests/bench/bench_score.py dump --sets flowers --seeds 3 --flowers-per-class 100 \\
      --out /tmp/score --cache CACHE
  python tests/bench/bench_score.py eval --out /tmp/score
  python tests/bench/bench_score.py eval --out /tmp/score --held-out --formulas current,new
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_adaptation as ba  # noqa: E402

from must_engine import quality  # noqa: E402
from must_engine.classifier_init import refine_prototypes  # noqa: E402
from must_engine.models.must_model import must_model_from_config  # noqa: E402
from must_engine.models.source import ModelSpec  # noqa: E402
from must_engine.runs import ZERO_SHOT_FILE, TrainJob, open_run  # noqa: E402
from must_engine.training import label_free  # noqa: E402
from must_engine.training.trainer import train  # noqa: E402
from must_engine.views import eval_view, strong_view  # noqa: E402
from must_engine.weights import load_model_weights  # noqa: E402

VIEWS = ("flip", "strong")


# ---- dump ------------------------------------------------------------------------------
class _Views(torch.utils.data.Dataset):
    """The extra views of the scored images, each drawn from a seed of its own image index,
    so every candidate sees the same augmented pictures."""

    def __init__(self, paths, pp, view: str):
        self.paths, self.view = list(paths), view
        self.transform = {"flip": eval_view, "strong": strong_view}[view](pp)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        random.seed(1000 + i)
        torch.manual_seed(1000 + i)
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB"))
        return x.flip(-1) if self.view == "flip" else x


@torch.no_grad()
def embed_views(model, paths, pp) -> dict[str, torch.Tensor]:
    state, pystate = torch.random.get_rng_state(), random.getstate()
    was = model.training
    model.eval()
    try:
        out = {}
        for view in VIEWS:
            loader = torch.utils.data.DataLoader(_Views(paths, pp, view), batch_size=64)
            feats = [model.embed(x.to(next(model.parameters()).device)).float().cpu()
                     for x in loader]
            out[view] = F.normalize(torch.cat(feats), dim=-1)
        return out
    finally:
        model.train(was)
        torch.random.set_rng_state(state)
        random.setstate(pystate)


def dump_run(work: Path, images: Path, classes: list[str], model_dir: Path, seed: int,
             overrides: dict) -> dict:
    records: list[dict] = []
    original_score = label_free.score_candidate
    original_teacher = label_free.RunScorer.score_teacher

    def recording_score(kind, features, classifier, logit_scale, reference, *, epoch=-1,
                        step=0):
        cand = original_score(kind, features, classifier, logit_scale, reference,
                              epoch=epoch, step=step)
        records.append({"kind": kind, "epoch": epoch, "step": step,
                        "logit_scale": float(logit_scale),
                        "classifier": classifier.detach().float().cpu().clone(),
                        "features": features.float().cpu().clone(),
                        "logged_score": cand.score, "signals": cand.signals})
        return cand

    def recording_teacher(self, teacher, epoch, step):
        out = original_teacher(self, teacher, epoch, step)
        records[-1]["views"] = embed_views(teacher, self.paths, self.pp)
        return out

    run_dir = work / f"run-s{seed}-{time.monotonic_ns()}"
    if seed:
        overrides = {**overrides, "seed": seed}
    job = TrainJob(images, classes, ModelSpec.parse(str(model_dir)), [], overrides=overrides)
    label_free.score_candidate = recording_score
    label_free.RunScorer.score_teacher = recording_teacher
    kept = None
    try:
        for event in train(job, run_dir):
            if type(event).__name__ == "ClassifierKept":
                kept = {"kind": event.kind, "epoch": event.epoch}
    finally:
        label_free.score_candidate = original_score
        label_free.RunScorer.score_teacher = original_teacher
    run = open_run(run_dir)
    model = must_model_from_config(run.architecture)
    extra = load_model_weights(run_dir / ZERO_SHOT_FILE, model)
    files = run.image_files()
    idx = extra["score_indices"].tolist()
    paths = [images / files[i] for i in idx]
    truth = torch.as_tensor(ba.truth_of([files[i] for i in idx], classes))
    zero_views = embed_views(model, paths, run.preprocess)
    anchors = iter(label_free.REFINE_ANCHORS)
    for r in records:
        if r["kind"] == "refined":
            r["anchor"] = next(anchors)
        if "views" not in r:
            r["views"] = zero_views
        probs = (r["logit_scale"] * r["features"] @ r["classifier"]).softmax(-1)
        r["accuracy"] = float((probs.argmax(1) == truth).float().mean())
    return {"seed": seed, "classes": classes, "truth": truth, "candidates": records,
            "reference": extra["score_reference"].float(), "kept": kept,
            "settings": run.data.get("settings", {})}


def cmd_dump(args) -> int:
    torch.set_num_threads(1)
    out = args.out.resolve()
    cache = (args.cache or out / "cache").resolve()
    (out / "dumps").mkdir(parents=True, exist_ok=True)
    args.seed_list = list(range(args.seeds))
    overrides = {k: ba.parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    for name in ba.parse_sets(args.sets):
        bset = ba.SETS[name]
        images, classes, model_dir = ba.prepare_set(bset, out, cache, args)
        for seed in args.seed_list:
            tag = f"{name}-s{seed}" + "".join(f"-{k}={v}" for k, v in overrides.items())
            dest = out / "dumps" / f"{tag}.pt"
            if dest.exists():
                continue
            t0 = time.perf_counter()
            d = dump_run(out / "runs" / name, images, classes, model_dir, seed, overrides)
            d.update(set=name, role=bset.role, overrides=overrides)
            torch.save(d, dest)
            accs = [c["accuracy"] for c in d["candidates"]]
            ba.log(f"[{tag}] {len(accs)} candidates, accuracy {min(accs):.3f}-{max(accs):.3f} "
                   f"({time.perf_counter() - t0:.0f} s)")
    return 0


# ---- signals ---------------------------------------------------------------------------
class Ctx:
    """One run's candidates, with what formulas need computed once."""

    def __init__(self, dump: dict, refined_teachers: str = "none"):
        self.dump = dump
        # The probe scores a short trial of each setting it tries (teachers after a few
        # steps, each "epoch 0") before the run; the run's own teachers start at the last
        # epoch-0 teacher. Keep-best chooses among the run's candidates only.
        recs = dump["candidates"]
        first = max(i for i, c in enumerate(recs) if c["kind"] == "teacher" and c["epoch"] == 0)
        self.probe = [c for c in recs[:first] if c["kind"] == "teacher"]
        self.cands = [c for i, c in enumerate(recs) if c["kind"] != "teacher" or i >= first]
        truth = dump["truth"]
        if refined_teachers != "none":
            # The head of each epoch's teacher refined on its own features of the scored
            # images (soft k-means seeded with the head), each anchor a candidate: what a
            # run offers as "refined_teacher" when it refines the teacher.
            teachers = [c for c in self.cands if c["kind"] == "teacher"]
            for t in teachers[-1:] if refined_teachers == "last" else teachers:
                for a in REFINE_ANCHORS:
                    w = refine_prototypes(t["features"], t["classifier"], t["logit_scale"],
                                          anchor=a)
                    p = (t["logit_scale"] * t["features"] @ w).softmax(-1)
                    self.cands.append({**t, "kind": "refined_teacher", "anchor": a,
                                       "classifier": w, "logged_score": float("nan"),
                                       "accuracy": float((p.argmax(1) == truth)
                                                         .float().mean())})
        self.ref = dump["reference"]
        self.n, self.c = self.ref.shape[0], self.cands[0]["classifier"].shape[1]
        for cand in self.cands + self.probe:
            cand["probs"] = self.probs(cand, cand["features"])
            cand["labels"] = cand["probs"].argmax(1)
        self.zero = next(c for c in self.cands if c["kind"] == "zero_shot")

    @staticmethod
    def probs(cand, feats):
        return (cand["logit_scale"] * feats @ cand["classifier"]).softmax(-1)

    def view_probs(self, cand, view):
        key = "probs_" + view
        if key not in cand:
            cand[key] = self.probs(cand, cand["views"][view])
        return cand[key]


def _signals(ctx: Ctx, cand) -> dict:
    if "_sig" not in cand:
        cand["_sig"] = quality.classifier_signals(cand["features"], cand["classifier"],
                                                  cand["logit_scale"], ctx.ref).to_dict()
    return cand["_sig"]


def sig(name: str) -> Callable:
    return lambda ctx, cand: _signals(ctx, cand)[name]


def view_agreement(view: str) -> Callable:
    def f(ctx, cand):
        return float((ctx.view_probs(cand, view).argmax(1) == cand["labels"]).float().mean())
    return f


def view_consistency(view: str) -> Callable:
    """1 - mean total variation between the probabilities on the evaluation view and on
    another view."""
    def f(ctx, cand):
        return 1 - 0.5 * float((ctx.view_probs(cand, view) - cand["probs"]).abs().sum(1).mean())
    return f


def knn_consistency(k: int = 10, space: str = "reference") -> Callable:
    """How often an image's predicted class is the majority of its k nearest neighbours'
    predicted classes (neighbours in the zero-shot feature space, which training does not
    move, or in the candidate's own)."""
    def f(ctx, cand):
        feats = ctx.ref if space == "reference" else cand["features"]
        sims = feats @ feats.T
        sims.fill_diagonal_(-2)
        nn = sims.topk(k, dim=1).indices
        onehot = F.one_hot(cand["labels"], ctx.c).float()
        votes = onehot[nn].sum(1)
        return float((votes.argmax(1) == cand["labels"]).float().mean())
    return f


def knn_soft(k: int = 10, space: str = "reference") -> Callable:
    """Mean dot product between an image's probabilities and its neighbours' mean."""
    def f(ctx, cand):
        feats = ctx.ref if space == "reference" else cand["features"]
        sims = feats @ feats.T
        sims.fill_diagonal_(-2)
        nn = sims.topk(k, dim=1).indices
        p = cand["probs"]
        return float((p * p[nn].mean(1)).sum(1).mean())
    return f


def agreement_with_others(ctx, cand) -> float:
    """Mean agreement of the candidate's labels with every other candidate's."""
    others = [c for c in ctx.cands if c is not cand]
    return statistics.mean(float((c["labels"] == cand["labels"]).float().mean())
                           for c in others)


def agreement_with_consensus(ctx, cand) -> float:
    """Agreement with the majority vote of all candidates' soft predictions."""
    if "_consensus" not in ctx.__dict__:
        ctx._consensus = torch.stack([c["probs"] for c in ctx.cands]).mean(0).argmax(1)
    return float((cand["labels"] == ctx._consensus).float().mean())


def cot_prior(ctx, cand) -> float:
    """COT against the candidate's own estimated class prior (mean probability)."""
    p = cand["probs"].double()
    n, c = p.shape
    prior = p.mean(0).clamp_min(1e-6)
    prior = prior / prior.sum()
    top_other = torch.where(torch.eye(c, dtype=torch.bool)[None], -1.0, p[:, None, :]).amax(-1)
    cost = torch.maximum(1 - p, top_other)
    log_a = torch.full((n,), -math.log(n), dtype=p.dtype)
    log_b = prior.log()
    k = -cost / 0.01
    f = torch.zeros(n, dtype=p.dtype)
    g = torch.zeros(c, dtype=p.dtype)
    for _ in range(200):
        f = log_a - torch.logsumexp(k + g[None, :], dim=1)
        g = log_b - torch.logsumexp(k + f[:, None], dim=0)
    plan = (k + f[:, None] + g[None, :]).exp()
    return 1 - float((plan * cost).sum() / plan.sum())


def ref_silhouette(ctx, cand) -> float:
    """Simplified silhouette of the predicted labels in the zero-shot feature space: own
    class mean similarity minus the best other class mean's (chance-free in [−1, 1])."""
    feats = ctx.ref
    labels = cand["labels"]
    onehot = F.one_hot(labels, ctx.c).float()
    counts = onehot.sum(0)
    means = (feats.T @ onehot) / counts.clamp_min(1)
    sims = feats @ means
    own = sims.gather(1, labels[:, None]).squeeze(1)
    sims.scatter_(1, labels[:, None], -9)
    sims[:, counts == 0] = -9
    return float((own - sims.max(1).values).mean())


def combo(*parts: tuple[Callable, float]) -> Callable:
    def f(ctx, cand):
        return sum(w * g(ctx, cand) for g, w in parts) / sum(w for _, w in parts)
    return f


def current(ctx, cand) -> float:
    return quality.quality_score(quality.QualitySignals.from_dict(_signals(ctx, cand)))


def _signals_at_temperature(ctx, cand, key: str, measure: Callable, goal: float,
                            lo: float, hi: float, rounds: int) -> dict:
    """The candidate's signals with its logits scaled by the temperature (found by bisection
    in log space between ``lo`` and ``hi``) at which ``measure(probs)`` reaches ``goal``;
    ``measure`` must grow with the scale. Cached in ``cand`` under ``key``."""
    if key not in cand:
        logits = cand["logit_scale"] * cand["features"] @ cand["classifier"]
        for _ in range(rounds):
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if measure((logits * mid).softmax(-1)) < goal else (lo, mid)
        t = math.sqrt(lo * hi)
        cand[key] = quality.classifier_signals(cand["features"], cand["classifier"],
                                               cand["logit_scale"] * t, ctx.ref).to_dict()
    return cand[key]


def tempered(name: str, target: float | None = None) -> Callable:
    """A quality signal computed after rescaling the candidate's logits so that its mean top
    probability equals the zero-shot classifier's: confidence that training inflated (self-
    training sharpens predictions whether or not they are right) no longer counts."""
    def f(ctx, cand):
        goal = target or float(ctx.zero["probs"].max(1).values.mean())
        return _signals_at_temperature(
            ctx, cand, f"_tempered{target}", lambda p: float(p.max(1).values.mean()), goal,
            0.01, 100.0, 40)[name]
    return f


def tempered_certainty(name: str, level: float = 0.5) -> Callable:
    """Like ``tempered`` but to a fixed mean certainty (1 - entropy / log C)."""
    def f(ctx, cand):
        def certainty(p):
            return 1 - float(-(p * p.clamp_min(1e-12).log()).sum(1).mean()) / math.log(ctx.c)
        return _signals_at_temperature(ctx, cand, f"_tc{level}", certainty, level,
                                       1e-3, 1e3, 50)[name]
    return f


FORMULAS: dict[str, Callable] = {
    "current": current,
    "logged": lambda ctx, cand: cand["logged_score"],
    # the score before the label-only one: balance and 1 - COT error
    "before": combo((sig("balance"), 1), (sig("cot"), 1)),
    **{name: sig(name) for name in ("confidence", "certainty", "nuclear", "balance", "cot",
                                    "prototype_agreement", "reference_agreement",
                                    "separation", "neighbour_agreement")},
    "cot_prior": cot_prior,
    **{f"agree_{v}": view_agreement(v) for v in VIEWS},
    **{f"consist_{v}": view_consistency(v) for v in VIEWS},
    "knn10_ref": knn_consistency(10, "reference"),
    "knn10_own": knn_consistency(10, "own"),
    "knnsoft10_ref": knn_soft(10, "reference"),
    "knnsoft10_own": knn_soft(10, "own"),
    "agree_others": agreement_with_others,
    "agree_consensus": agreement_with_consensus,
    "ref_silhouette": ref_silhouette,
    "cot_T": tempered("cot"),
    "nuclear_T": tempered("nuclear"),
    **{f"cot_C{t}": tempered_certainty("cot", t) for t in (0.3, 0.5, 0.7)},
    **{f"bal+cot_C{t}": combo((sig("balance"), 1), (tempered_certainty("cot", t), 1))
       for t in (0.3, 0.5, 0.7)},
    **{f"cot_T{t}": tempered("cot", t) for t in (0.3, 0.5, 0.7, 0.9)},
    **{f"bal+cot_T{t}": combo((sig("balance"), 1), (tempered("cot", t), 1))
       for t in (0.3, 0.5, 0.7, 0.9)},
    "bal+proto": combo((sig("balance"), 1), (sig("prototype_agreement"), 1)),
    "bal+cot+proto": combo((sig("balance"), 1), (sig("cot"), 1),
                           (sig("prototype_agreement"), 1)),
    "cot+proto": combo((sig("cot"), 1), (sig("prototype_agreement"), 1)),
    "bal+cotT": combo((sig("balance"), 1), (tempered("cot"), 1)),
    "bal+cotT+proto": combo((sig("balance"), 1), (tempered("cot"), 1),
                            (sig("prototype_agreement"), 1)),
    **{f"bal+proto+knn{k}": combo((sig("balance"), 1), (sig("prototype_agreement"), 1),
                                  (knn_consistency(k, "own"), 1)) for k in (5, 20)},
    "proto+knn": combo((sig("prototype_agreement"), 1), (knn_consistency(10, "own"), 1)),
    "bal+knn": combo((sig("balance"), 1), (knn_consistency(10, "own"), 1)),
    "bal+proto+nbr": combo((sig("balance"), 1), (sig("prototype_agreement"), 1),
                           (sig("neighbour_agreement"), 1)),
    "bal+proto+knn": combo((sig("balance"), 1), (sig("prototype_agreement"), 1),
                           (knn_consistency(10, "own"), 1)),
}


# ---- eval ------------------------------------------------------------------------------
def regret_and_rho(ctx: Ctx, formula: Callable) -> tuple[float, float | None, dict]:
    scores = [float(formula(ctx, c)) for c in ctx.cands]
    accs = [c["accuracy"] for c in ctx.cands]
    # keep-best: the first of the highest scores (a later one must beat it strictly)
    pick = max(range(len(scores)), key=lambda i: (scores[i], -i))
    rho = ba.spearman(list(zip(scores, accs, strict=True)))
    return max(accs) - accs[pick], rho, ctx.cands[pick]


def _short(c) -> str:
    if c["kind"] == "refined_teacher":
        return f"rt{c['anchor']}e{c['epoch'] + 1}"
    return f"e{c['epoch'] + 1}" if c["kind"] == "teacher" else (
        "zs" if c["kind"] == "zero_shot" else f"ref{c.get('anchor', '')}")


REFINE_ANCHORS = label_free.REFINE_ANCHORS


def load_dumps(out: Path, held_out: bool, sets: str | None,
               refined_teachers: str = "none") -> dict[str, list[Ctx]]:
    by_set: dict[str, list[Ctx]] = {}
    for path in sorted((out / "dumps").glob("*.pt")):
        d = torch.load(path, weights_only=False)  # our own dumps
        if d["role"] == "held-out" and not held_out:
            continue
        if sets and d["set"] not in sets.split(","):
            continue
        by_set.setdefault(d["set"], []).append(Ctx(d, refined_teachers))
    return by_set


def cmd_eval(args) -> int:
    torch.set_num_threads(1)
    by_set = load_dumps(args.out.resolve(), args.held_out, args.sets, args.refined_teachers)
    names = args.formulas.split(",") if args.formulas else list(FORMULAS)
    order = [s for s in ba.SETS if s in by_set]
    head = "| formula | " + " | ".join(f"{s} rho / regret / kept %" for s in order) + \
        " | mean rho | mean regret | worst regret |"
    lines = [head, "|" + "---|" * (len(order) + 4)]
    for name in names:
        formula = FORMULAS[name]
        cells, rhos, regrets = [], [], []
        for s in order:
            res = [regret_and_rho(ctx, formula) for ctx in by_set[s]]
            rr = [r[1] for r in res if r[1] is not None]
            reg = [r[0] for r in res]
            rho = statistics.mean(rr) if rr else float("nan")
            rhos.append(rho)
            regrets += reg
            picks = "/".join(_short(r[2]) for r in res)
            kept = statistics.mean(r[2]["accuracy"] for r in res)
            cells.append(f"{rho:+.2f} / {100 * statistics.mean(reg):.1f} / {100 * kept:.1f} "
                         f"({picks})")
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {np.nanmean(rhos):+.2f} | {100 * statistics.mean(regrets):.2f} | "
                     f"{100 * max(regrets):.1f} |")
    if args.oracle:
        for s in order:
            for ctx in by_set[s]:
                accs = " ".join(f"{_short(c)}:{100 * c['accuracy']:.1f}" for c in ctx.cands)
                print(f"{s} s{ctx.dump['seed']}: {accs}")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--cache", type=Path)
    d.add_argument("--sets", default="development")
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--per-class", type=int, default=20)
    d.add_argument("--flowers-per-class", type=int, default=100)
    d.add_argument("--flowers", type=Path, default=ba.DEFAULT_FLOWERS)
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e = sub.add_parser("eval")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--held-out", action="store_true", help="include the held-out sets")
    e.add_argument("--sets", help="only these sets (comma-separated)")
    e.add_argument("--formulas", help="comma-separated names from FORMULAS (default all)")
    e.add_argument("--refined-teachers", choices=("none", "each", "last"), default="none",
                   help="add the teacher with its head refined on its own features (anchors "
                   "0.5/0.3/0.1) to the candidates: after each epoch, or after the last")
    e.add_argument("--oracle", action="store_true", help="print every candidate's accuracy")
    args = p.parse_args(argv)
    return cmd_dump(args) if args.cmd == "dump" else cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())

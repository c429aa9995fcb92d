"""The class-name workbench: check the class names before training.

- ``similar_classes``: pairs of classes whose prompt embeddings are nearly identical (the
  model can hardly tell them apart from their names);
- ``template_agreement``: per class, how often each prompt template on its own picks the same
  class as the whole prompt set, over the images the set gives to that class;
- synonyms: a class can have several names ("cab; taxi"); each name's prompt embedding is
  built as usual and their mean (normalised) is the class embedding;
- ``ZeroShotWorkbench``: embeds the images once and re-scores them for new names, synonyms or
  templates in the time it takes to embed the prompts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIMILAR_CLASSES = 0.95  # cosine of the class embeddings above which a pair is flagged


def split_synonyms(entry: str) -> list[str]:
    """``"cab; taxi"`` -> ``["cab", "taxi"]`` (blanks and repeats dropped, order kept)."""
    out: list[str] = []
    for part in entry.split(";"):
        name = " ".join(part.split())
        if name and name.casefold() not in {o.casefold() for o in out}:
            out.append(name)
    return out


@torch.no_grad()
def prompt_embeddings(clip_model, tokenizer, names: Sequence[str], templates: Sequence[str],
                      device: torch.device | str = "cpu", batch: int = 256) -> torch.Tensor:
    """[len(names), len(templates), D]: each prompt's normalised text embedding."""
    texts = [t.format(n) for n in names for t in templates]
    chunks = []
    for start in range(0, len(texts), batch):
        tokens = tokenizer(texts[start:start + batch]).to(device)
        chunks.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(chunks).reshape(len(names), len(templates), -1)


@dataclass
class ClassTexts:
    """Per class, per template, the embedding averaged over the class's synonyms:
    ``per_template`` is [C, T, D]; ``weights`` [D, C] is the classifier (mean over templates
    of each synonym, normalised, then mean over synonyms, normalised)."""

    per_template: torch.Tensor
    weights: torch.Tensor


@torch.no_grad()
def class_texts(clip_model, tokenizer, synonyms: Sequence[Sequence[str]],
                templates: Sequence[str], device: torch.device | str = "cpu") -> ClassTexts:
    flat = [n for names in synonyms for n in names]
    emb = prompt_embeddings(clip_model, tokenizer, flat, templates, device)  # [S, T, D]
    per_template, weights, at = [], [], 0
    for names in synonyms:
        e = emb[at:at + len(names)]
        at += len(names)
        per_name = F.normalize(e.mean(dim=1), dim=-1)  # as open_clip: templates then norm
        weights.append(F.normalize(per_name.mean(dim=0), dim=-1))
        per_template.append(F.normalize(e.mean(dim=0), dim=-1))
    return ClassTexts(torch.stack(per_template), torch.stack(weights).T.contiguous())


def similar_classes(weights: torch.Tensor, names: Sequence[str],
                    threshold: float = SIMILAR_CLASSES) -> list[tuple[str, str, float]]:
    """Pairs of classes whose embeddings' cosine is at least ``threshold``, most alike first."""
    w = F.normalize(weights.float(), dim=0)
    sim = (w.T @ w).numpy()
    pairs = [(names[i], names[j], float(sim[i, j])) for i in range(len(names))
             for j in range(i + 1, len(names)) if sim[i, j] >= threshold]
    return sorted(pairs, key=lambda p: -p[2])


def template_agreement(image_features: torch.Tensor, texts: ClassTexts) -> list[float]:
    """Per class: over the images the whole prompt set gives to it, the mean share of the
    templates that, used alone, give them to it too (nan for a class with no image)."""
    feats = F.normalize(image_features.float(), dim=-1)
    ensemble = (feats @ texts.weights).argmax(dim=1)  # [N]
    per_t = torch.einsum("nd,ctd->ntc", feats, texts.per_template).argmax(dim=2)  # [N, T]
    agree = (per_t == ensemble[:, None]).float().mean(dim=1)  # [N]
    out = []
    for c in range(texts.weights.shape[1]):
        mine = ensemble == c
        out.append(float(agree[mine].mean()) if bool(mine.any()) else math.nan)
    return out


@dataclass
class WorkbenchResult:
    class_names: list[str]  # the first synonym of each class
    probs: np.ndarray  # [N, C] zero-shot probabilities
    similar: list[tuple[str, str, float]]
    agreement: list[float]
    seconds: float

    def class_counts(self) -> list[int]:
        return np.bincount(self.probs.argmax(axis=1), minlength=len(self.class_names)).tolist()


class ZeroShotWorkbench:
    """Image embeddings computed once; ``preview`` re-scores them for new class entries."""

    def __init__(self, clip_model, tokenizer, logit_scale: float,
                 image_features: torch.Tensor, device: torch.device | str = "cpu"):
        self.model = clip_model
        self.tokenizer = tokenizer
        self.logit_scale = float(logit_scale)
        self.features = F.normalize(image_features.float(), dim=-1)
        self.device = device

    @classmethod
    @torch.no_grad()
    def from_images(cls, clip, paths: Sequence[Path], *, device: str = "cpu",
                    batch_size: int = 64,
                    should_stop: Callable[[], bool] | None = None) -> ZeroShotWorkbench:
        """Embed every image once (``clip`` as ``models.source.load_clip`` returns it)."""
        from must_engine.training.data import EvalDataset, make_loader

        model = clip.model.to(device).eval()
        ds = EvalDataset(list(paths), clip.preprocess)
        loader = make_loader(ds, list(range(len(ds))), batch_size, 0, drop_last=False)
        feats = torch.zeros(len(ds), model.visual.output_dim)
        for images, index, _ok in loader:
            if should_stop is not None and should_stop():
                raise InterruptedError("The preview was cancelled.")
            feats[index] = model.encode_image(images.to(device)).float().cpu()
        return cls(model, clip.tokenizer, clip.logit_scale, feats, device)

    @torch.no_grad()
    def preview(self, entries: Sequence[str], templates: Sequence[str]) -> WorkbenchResult:
        """Zero-shot probabilities for ``entries`` (one per class, synonyms after ';')."""
        import time

        t0 = time.perf_counter()
        synonyms = [split_synonyms(e) for e in entries]
        if any(not s for s in synonyms):
            raise ValueError("Every class needs a name; remove the empty line.")
        texts = class_texts(self.model, self.tokenizer, synonyms, templates, self.device)
        logits = self.logit_scale * self.features @ texts.weights
        names = [s[0] for s in synonyms]
        return WorkbenchResult(names, logits.softmax(dim=1).numpy(),
                               similar_classes(texts.weights, names),
                               template_agreement(self.features, texts),
                               time.perf_counter() - t0)

"""Does self-training act at all? It learns only from images whose teacher confidence passes
the threshold; when none does for a whole epoch, the run trains on nothing and ends close to
zero-shot. Seen on flowers with a model that fits them badly: teacher confidence stayed near
0.28 against the 0.7 threshold for the whole run, and nothing said so.

After each epoch, ``NoConfidentLabelsWatch.update`` returns a ``RunWarning`` (kind
``no_confident_labels``) the first time an epoch ends with no confident image, with a
threshold that would have let about a tenth of the images through.
"""

from __future__ import annotations

from dataclasses import dataclass

from must_engine.events import EpochSummary, RunWarning

NO_CONFIDENT_LABELS = "no_confident_labels"
SUGGESTED_PASS_SHARE = 0.10  # the threshold suggested lets about this share of images pass


def threshold_passing(summary: EpochSummary, share: float = SUGGESTED_PASS_SHARE) -> float:
    """The lowest histogram edge above which at least ``share`` of the epoch's images lie."""
    counts = summary.confidence_histogram
    edges = summary.confidence_bin_edges
    total = sum(counts)
    if total <= 0 or len(edges) != len(counts) + 1:
        return 0.0
    above = 0
    for k in range(len(counts) - 1, -1, -1):
        above += counts[k]
        if above >= share * total:
            return float(edges[k])
    return float(edges[0])


@dataclass
class NoConfidentLabelsWatch:
    """Warns once per training session when an epoch ends with no image over the threshold."""

    threshold: float
    warned: bool = False

    def update(self, summary: EpochSummary, step: int = -1) -> list[RunWarning]:
        if self.warned or sum(summary.confident_counts) > 0:
            return []
        self.warned = True
        suggestion = threshold_passing(summary)
        lower = (f" (about {SUGGESTED_PASS_SHARE:.0%} of the images are above "
                 f"{suggestion:.2f})" if 0 < suggestion < self.threshold else "")
        return [RunWarning(
            NO_CONFIDENT_LABELS,
            f"No image passed the confidence threshold ({self.threshold:g}) in epoch "
            f"{summary.epoch + 1} (mean teacher confidence {summary.mean_confidence:.2f}), so "
            "self-training had nothing to learn from and the model stays close to zero-shot.",
            f"Lower the threshold{lower}, check that the class names describe the pictures, "
            "or pick a model that fits them better.",
            [], step)]

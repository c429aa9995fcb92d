"""The results browser: a virtualised thumbnail grid over a run's predictions, its filters,
the image inspector and the export dialog."""

from must_gui.results.results_page import ResultsPage

__all__ = ["ResultsPage"]

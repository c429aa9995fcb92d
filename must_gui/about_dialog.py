"""Help > About: what this is, the versions of everything that matters for a bug report,
the device in use and where downloaded models are cached."""

from __future__ import annotations

from importlib import metadata

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QSize, Qt, qVersion
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from must_engine.version import __version__ as app_version
from must_gui.style import app_icon


def _dist_version(*names: str) -> str:
    """Installed version without importing the package (torch takes seconds to import)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def version_rows(device: str) -> list[tuple[str, str]]:
    import pyqtgraph

    try:
        from must_engine.models.catalog import cache_location

        cache = cache_location()
    except Exception as exc:  # noqa: BLE001 - an About box must open whatever is broken
        cache = f"unknown ({exc})"
    return [
        ("MUST Studio", app_version),
        ("PyTorch", _dist_version("torch")),
        ("open_clip", _dist_version("open_clip_torch", "open-clip-torch")),
        ("Qt", qVersion()),
        ("PySide6", pyside_version),
        ("pyqtgraph", pyqtgraph.__version__),
        ("Device in use", device or "automatic"),
        ("Model cache", cache),
    ]


class AboutDialog(QDialog):
    def __init__(self, device: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About MUST Studio")
        self.rows = version_rows(device)
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(QSize(64, 64)))
        title = QLabel(f"<h2 style='margin:0'>MUST Studio {app_version}</h2>"
                       "<p>Adapts a CLIP zero-shot classifier to a folder of unlabelled photos "
                       "with Masked Unsupervised Self-Training (Li, Savarese and Hoi, "
                       "ICLR 2023).</p>")
        title.setWordWrap(True)
        title.setTextFormat(Qt.TextFormat.RichText)
        top = QHBoxLayout()
        top.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        top.addWidget(title, 1)
        form = QFormLayout()
        self.value_labels: dict[str, QLabel] = {}
        for name, value in self.rows:
            label = QLabel(value)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            self.value_labels[name] = label
            form.addRow(f"{name}:", label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = QPushButton("&Copy versions")
        copy.clicked.connect(self.copy_versions)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(form)
        layout.addWidget(buttons)
        self.resize(520, self.sizeHint().height())

    def text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.rows)

    def copy_versions(self) -> None:
        QGuiApplication.clipboard().setText(self.text())

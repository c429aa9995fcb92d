"""MUST Studio's desktop app (PySide6 + pyqtgraph). It drives ``must_engine`` through its
public API and events; it never trains on the GUI thread."""

"""The main window's pages: Start, Setup and Training (Results lives in must_gui.results)."""

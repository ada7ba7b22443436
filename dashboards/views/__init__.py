"""Dashboard pages; each one runs on its own, so an AppTest can load a page file directly."""

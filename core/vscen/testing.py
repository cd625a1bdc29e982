"""vscen's test kit for plugin authors (pytest fixtures; to be written)."""

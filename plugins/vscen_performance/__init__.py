"""vscen built-in plugin (to be written)."""

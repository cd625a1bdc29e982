"""A plugin whose import fails, as one with a missing dependency does."""

raise ImportError("vscen-broken needs libfrobnicate, which is not installed")

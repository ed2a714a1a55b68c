"""Runnable benchmark scripts (not installed, not collected by pytest); a package so that they import each other
with ordinary import statements (``from benchmarks import training``)."""

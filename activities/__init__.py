"""Activities: plain functions where all I/O and non-determinism lives."""

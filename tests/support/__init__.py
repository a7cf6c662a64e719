"""What the tests share, one of each: waiting for a condition (wait.py) or for the stack's state (state.py), a free
port (ports.py), and `sbworker` as a subprocess (processes.py). Fixtures stay in tests/fixtures/ (pytest plugins);
these are plain helpers."""

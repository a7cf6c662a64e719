"""Shared fixtures live in tests/fixtures/ as plugins so each area owns its own file."""

pytest_plugins = [
    "tests.fixtures.isolation",
    "tests.fixtures.hypothesis_profile",
    "tests.fixtures.target",
    "tests.fixtures.dts",
    "tests.fixtures.localbus",
    "tests.chaos.short",  # the random seed of make test-slow's short campaign, drawn once for all xdist workers
]

"""Throughput and latency measurements, printed next to the raw SDK ceilings."""

"""What the service tells the outside about itself: logs, metrics (/metrics, OTLP, Azure Monitor) and traces.

The service path calls it through one small interface; with telemetry off that interface is a no-op, so the hot
path pays nothing and never asks whether telemetry is on.
"""

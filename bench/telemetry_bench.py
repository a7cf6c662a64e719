"""What telemetry costs the listener: row 3 of `make bench` (a pre-loaded backlog of starts, drained by
`sbworker run --no-worker`, verified in DTS) under three configurations, interleaved, medians of 3:

- disabled: OTEL_SDK_DISABLED=true (no metrics, no spans, OpenTelemetry never imported by the listener);
- no reader: nothing configured and HEALTH_PORT=0, as in `make bench`: no /metrics and no exporter, so nothing
  is recorded (sbworker.observability.telemetry.setup, `scrape=False`);
- default:  nothing configured but the health port, as deployed (metrics recorded for /metrics, no spans);
- traced:   OTEL_EXPORTER_OTLP_ENDPOINT set and OTEL_TRACES_SAMPLER=always_on: a span per message plus the SDK's
  create_orchestration span, exported over OTLP/HTTP (batched) to a sink in this process that accepts and
  discards them, and metrics pushed every second.

`python -m bench.telemetry_bench [--messages N] [--repeats 3]`. Runs vary by about ±15% on a shared machine, so
compare figures within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench import listener_throughput
from bench.stack import Backend, Broker, free_port

CONFIGS: dict[str, dict[str, str]] = {
    "disabled": {"OTEL_SDK_DISABLED": "true"},
    "no reader": {},
    "default": {},
    "traced": {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_METRIC_EXPORT_INTERVAL": "1000"},  # + the sink's endpoint
}


class Sink:
    """An OTLP/HTTP endpoint that answers 200 to everything and keeps only a count of bytes and requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


async def run(messages: int, repeats: int, max_concurrent: int, prefetch: int
              ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """starts/s and listener CPU ms per message, per configuration, one entry per repeat."""
    sink = Sink()
    CONFIGS["traced"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    broker, backend = Broker(), Backend()
    try:
        for repeat in range(repeats):  # interleaved, so that drift on a shared machine hits every configuration
            for name, env in CONFIGS.items():
                before = sink.bytes
                for key in (k for c in CONFIGS.values() for k in c):
                    os.environ.pop(key, None)
                os.environ.update(env)  # the listener process copies this environment
                # /metrics served (as deployed) except in "no reader"; the bench's listeners otherwise get port 0.
                health = {} if name in ("disabled", "no reader") else {"HEALTH_PORT": str(free_port())}
                figure = await listener_throughput.measure(broker, backend, messages, max_concurrent=max_concurrent,
                                                           prefetch=prefetch, extra_env=health)
                results[name].append(figure.per_second)
                cpu[name].append(figure.listener_cpu_s / messages * 1000)
                print(f"  repeat {repeat + 1} {name:9} {figure.per_second:6.0f} starts/s  listener CPU "
                      f"{figure.listener_cpu_s / messages * 1000:.2f} ms/msg  OTLP {sink.bytes - before:,} bytes",
                      file=sys.stderr, flush=True)
    finally:
        for key in (k for c in CONFIGS.values() for k in c):
            os.environ.pop(key, None)
        broker.close()
        backend.close()
        sink.close()
    return results, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prefetch", type=int, default=100)
    args = parser.parse_args(argv)
    results, cpu = asyncio.run(run(args.messages, args.repeats, args.concurrency, args.prefetch))
    medians = {name: statistics.median(values) for name, values in results.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"telemetry bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; medians of {args.repeats}; {args.messages} starts per run, "
          f"{args.concurrency} concurrent, prefetch {args.prefetch}; listener, localbus and DTS in separate processes")
    print("| configuration | starts/s | vs disabled | runs | listener CPU per message | vs disabled |\n"
          "| --- | --- | --- | --- | --- | --- |")
    base, cpu_base = medians["disabled"], cpu_medians["disabled"]
    for name, value in medians.items():
        runs = ", ".join(f"{v:,.0f}" for v in results[name])
        print(f"| {name} | {value:,.0f} | {value / base:.2f}x | {runs} | {cpu_medians[name]:.2f} ms | "
              f"{cpu_medians[name] / cpu_base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

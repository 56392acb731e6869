"""Run an artifact on a device over TVM RPC: latency and quality against host references."""

from .bench import BenchConfig, HarnessError, Resilience, bench_device, format_report
from .remote import connect, remote_engine

__all__ = ["BenchConfig", "HarnessError", "Resilience", "bench_device", "connect", "format_report",
           "remote_engine"]

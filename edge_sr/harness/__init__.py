"""Run an artifact on a device over TVM RPC: latency and quality against host references."""

from ..device.rpc import connect
from .bench import BenchConfig, DeviceError, Resilience, bench_device, format_report
from .remote import remote_engine

__all__ = ["BenchConfig", "DeviceError", "Resilience", "bench_device", "connect", "format_report",
           "remote_engine"]

"""The board itself: its serial console (pyserial), what it reports, its RPC server."""

from __future__ import annotations

from collections.abc import Callable

from .board import RpcConfig, board_info, start_rpc, stop_rpc
from .console import CommandResult, ConsoleConfig, ConsoleError, SerialConsole

__all__ = ["CommandResult", "ConsoleConfig", "ConsoleError", "RpcConfig", "SerialConsole",
           "board_info", "rpc_restarter", "start_rpc", "stop_rpc"]


def rpc_restarter(console: ConsoleConfig, rpc: RpcConfig) -> Callable[[], None]:
    """A harness restart hook: log in over the console (waiting for a rebooting board),
    stop a wedged server, start a fresh one and wait until it listens."""

    def restart() -> None:
        with SerialConsole(console) as con:
            stop_rpc(con, rpc.port)
            start_rpc(con, rpc)

    return restart

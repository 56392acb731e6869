"""Start the TVM RPC server on the device.

``python -m runtime.server [--host 127.0.0.1] [--port 9090] [--tracker HOST:PORT --key rpi4]``

TVM RPC executes whatever library a client uploads, so the server binds to 127.0.0.1
unless ``--host`` names another address together with ``--allow-remote``; then it warns.
Reach a remote board through an SSH tunnel or a tracker on a private network.
"""

from __future__ import annotations

import argparse
import logging
import sys

from runtime.threads import prepare

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--port-end", type=int, default=9199)
    parser.add_argument("--tracker", type=parse_addr, help="register with a tracker HOST:PORT")
    parser.add_argument("--key", default="", help="device key for the tracker (e.g. rpi4)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="required to bind a non-loopback address")
    args = parser.parse_args(argv)
    prepare()  # before TVM's pool exists; the server's session processes inherit it
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.host not in LOOPBACK:
        if not args.allow_remote:
            print(f"runtime.server: error: refusing to bind {args.host}: TVM RPC runs any "
                  "uploaded code; pass --allow-remote on a private network only", file=sys.stderr)
            return 2
        print(f"runtime.server: WARNING: binding {args.host}: anyone who reaches this port can "
              "run code on this device", file=sys.stderr)
    from tvm import rpc

    from runtime.device_info import register_all

    server = rpc.Server(args.host, port=args.port, port_end=args.port_end,
                        tracker_addr=args.tracker, key=args.key,
                        server_init_callback=register_all)
    print(f"runtime.server: listening on {args.host}:{server.port}"
          + (" (loopback only; use --host/--allow-remote to expose it)"
             if args.host in LOOPBACK else ""), flush=True)
    server.proc.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peer runtimes measured beside our TVM builds (optional: ``pip install -e .[bench]``)."""

"""``python -m edge_sr`` is the ``edge-sr`` CLI."""

from .cli import main

raise SystemExit(main())

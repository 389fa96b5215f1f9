"""`python -m enrichhq` runs the command line."""

from __future__ import annotations

from enrichhq.cli import main

main()

"""``python -m mock_upstream``: see ``mock_upstream.cli``."""

from __future__ import annotations

from mock_upstream.cli import command

if __name__ == "__main__":
    command(prog_name="python -m mock_upstream")

"""Assertions shared by the tests."""

from __future__ import annotations

import subprocess


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, a one-paragraph `error:` message holding the fragments, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "error:" in result.stderr, result.stderr
    flat = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {flat!r}"

"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest

from dsomarket.clients import cli


@pytest.fixture
def run(capsys):
    """``dsomarket ARGS...`` in process: returns (exit status, stdout, stderr)."""

    def _run(*argv):
        code = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run

"""Fixtures of the command-line tests."""

import pytest

from harmonicdet.cli import main


@pytest.fixture
def refused(capsys):
    """``refused(*argv)``: runs ``harmonicdet ARGV`` in-process and returns its one error line, after checking that
    the command was refused as a user's mistake is: exit code 2, no traceback, exactly one line."""

    def run(*argv):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("harmonicdet")]
        assert len(lines) == 1, err
        return lines[0]

    return run

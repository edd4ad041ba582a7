"""The one place that turns failures into messages (errors.run)."""

from __future__ import annotations

import pytest

from matrix_synapse_setup.core import errors


def _fail(exc: BaseException):
    def main():
        raise exc

    return main


@pytest.mark.parametrize(
    ("value", "expected"), [(None, False), ("", False), ("0", False), ("1", True)]
)
def test_debugging_follows_dpkg_meaning(monkeypatch, value, expected):
    # dpkg exports DPKG_MAINTSCRIPT_DEBUG=0 to every maintainer script.
    if value is None:
        monkeypatch.delenv("DPKG_MAINTSCRIPT_DEBUG", raising=False)
    else:
        monkeypatch.setenv("DPKG_MAINTSCRIPT_DEBUG", value)
    assert errors.debugging() is expected


@pytest.mark.parametrize("value", ["", "0"])
def test_a_setup_error_is_one_message_and_its_exit_code(monkeypatch, capsys, value):
    monkeypatch.setenv("DPKG_MAINTSCRIPT_DEBUG", value)
    code = errors.run(
        _fail(errors.SetupError("what is wrong; how to fix it", exit_code=3)), prog="p"
    )
    assert code == 3
    assert capsys.readouterr().err == "p: error: what is wrong; how to fix it\n"


def test_an_unforeseen_error_says_how_to_get_details(monkeypatch, capsys):
    monkeypatch.delenv("DPKG_MAINTSCRIPT_DEBUG", raising=False)
    assert errors.run(_fail(KeyError("x")), prog="p") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("p: internal error: KeyError")
    assert "DPKG_MAINTSCRIPT_DEBUG=1" in err


def test_debugging_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv("DPKG_MAINTSCRIPT_DEBUG", "1")
    assert errors.run(_fail(errors.SetupError("bad")), prog="p") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("p: error: bad\n")


def test_success_and_interrupt(capsys):
    assert errors.run(lambda: None) == 0
    assert errors.run(_fail(KeyboardInterrupt())) == 130
    assert "interrupted" in capsys.readouterr().err

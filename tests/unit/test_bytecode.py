"""Our own checked-hash byte-code (matrix_synapse_setup/bytecode.py, issue 11)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from matrix_synapse_setup import bytecode

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root writes byte-code")


def package(tmp_path, source="VALUE = 1\n"):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(source)
    return pkg


def test_missing_bytecode_is_written_as_checked_hash(tmp_path):
    pkg = package(tmp_path)
    assert bytecode.refresh(pkg) == ["__init__.py", "mod.py"]
    cached = importlib.util.cache_from_source(str(pkg / "mod.py"))
    header = open(cached, "rb").read(16)
    assert header[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(header[4:8], "little") == 0b11  # hash-based, checked
    assert header[8:] == importlib.util.source_hash((pkg / "mod.py").read_bytes())


def test_current_bytecode_is_left_alone(tmp_path):
    pkg = package(tmp_path)
    bytecode.refresh(pkg)
    cached = importlib.util.cache_from_source(str(pkg / "mod.py"))
    before = os.stat(cached)
    assert bytecode.refresh(pkg) == []
    after = os.stat(cached)
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)


def test_a_changed_source_of_the_same_size_and_time_is_compiled_again(tmp_path):
    # What a rebuilt package of the same version does: every file gets the changelog's
    # date, so a timestamped .pyc would be taken as current.
    pkg = package(tmp_path, "VALUE = 1\n")
    mod = pkg / "mod.py"
    bytecode.refresh(pkg)
    stat = os.stat(mod)
    mod.write_text("VALUE = 2\n")
    os.utime(mod, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert bytecode.refresh(pkg) == ["mod.py"]
    spec = importlib.util.spec_from_file_location("mod", mod)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.VALUE == 2


def test_a_failure_is_no_error(tmp_path):
    pkg = package(tmp_path, "def broken(:\n")
    assert bytecode.refresh(pkg) == ["__init__.py"]  # mod.py: Python will say it at import

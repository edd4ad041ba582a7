"""The admin command, run as a process against the throwaway cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def admin(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from matrix_synapse_setup.commands.cli import main; sys.exit(main())"
    return subprocess.run(
        ["/usr/bin/python3", "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def common(cluster, names, tmp_path):
    dbname, user = names
    return [
        "--config", str(tmp_path / "absent.yaml"),
        "--host", "localhost", "--port", str(cluster.port),
        "--dbname", dbname, "--user", user,
        "--socket-dir", cluster.socket_dir, "--password-file", "-",
    ]  # fmt: skip


def test_provision_then_unchanged(cluster, names, tmp_path):
    password = "pa ss'\"word\\ 日本"
    first = admin("provision", *common(cluster, names, tmp_path), stdin=password + "\n")
    assert first.returncode == 0, first.stderr
    assert f"role {names[1]}: created" in first.stdout
    assert first.stdout.strip().endswith("changed")
    assert password not in first.stdout + first.stderr
    second = admin("provision", *common(cluster, names, tmp_path), stdin=password + "\n")
    assert second.returncode == 0, second.stderr
    assert "unchanged: nothing to do" in second.stdout
    assert f"role {names[1]}: unchanged" in second.stdout


def test_values_come_from_the_installed_snippet(cluster, names, tmp_path):
    dbname, user = names
    admin("provision", *common(cluster, names, tmp_path), stdin="from-snippet")
    snippet = tmp_path / "database.yaml"
    snippet.write_text(
        "database:\n  name: psycopg2\n  args:\n"
        f"    user: {user}\n    password: from-snippet\n    dbname: {dbname}\n"
        f"    host: 127.0.0.1\n    port: {cluster.port}\n    sslmode: disable\n"
    )
    result = admin("verify", "--config", str(snippet))
    assert result.returncode == 0, result.stderr
    assert f"login as {user} over TCP: ok" in result.stdout


def test_bad_name_is_one_clear_line_without_traceback(cluster, names, tmp_path):
    args = common(cluster, names, tmp_path)
    args[args.index("--dbname") + 1] = 'bad"name'
    result = admin("provision", *args, stdin="pw")
    assert result.returncode == 1
    assert result.stderr.startswith("matrix-synapse-setup: error: The database name 'bad\"name'")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.server_language
def test_stopped_server_message_and_debug_traceback(names, tmp_path, cluster):
    args = common(cluster, names, tmp_path)
    args[args.index("--port") + 1] = "1"
    quiet = admin("provision", *args, stdin="pw")
    assert quiet.returncode == 1
    assert "pg_lsclusters" in quiet.stderr and "Traceback" not in quiet.stderr
    loud = admin("provision", *args, stdin="pw", env={"DPKG_MAINTSCRIPT_DEBUG": "1"})
    assert "Traceback" in loud.stderr


def test_no_password_anywhere_is_refused(tmp_path):
    result = admin("verify", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "--password-file" in result.stderr


def test_help_lists_the_commands():
    result = admin("--help")
    assert result.returncode == 0
    assert "provision" in result.stdout and "verify" in result.stdout

"""postgresql-common's hook for ``pg_upgradecluster``: our PostgreSQL settings for Synapse
follow the cluster to its new major version.

``pg_upgradecluster`` copies postgresql.conf, pg_hba.conf, pg_ident.conf, start.conf and
pg_ctl.conf to the new cluster, but not conf.d, where our drop-in is (tuning.py): without
this hook the new cluster would run with PostgreSQL's defaults.  It runs every
executable in ``/etc/postgresql-common/pg_upgradecluster.d`` with run-parts, as the
cluster's owner (postgres), with the arguments OLDVERSION NEWNAME NEWVERSION PHASE:
phase ``init`` once the new cluster is made (for the dump method, started on a
temporary port) and its configuration copied, before any data; ``finish`` at the end.
A hook that fails makes pg_upgradecluster drop the new cluster and give up, so nothing
of ours may ever fail: a problem is one line of warning naming the fix, and exit 0.

In phase ``init``, when the old cluster's conf.d holds our drop-in, the new cluster gets
it, re-sized for the new cluster (``tuning.text_for``, exactly what a later configure
writes, so that it then finds the file current and changes nothing: with the old drop-in's
max_connections, which the connection budget of Synapse's processes had set and a later
configure computes again from the same processes), written atomically
with the cluster owner's ownership, 0644.  The new cluster reads it when it is started
for good at the end of the upgrade, after the old one is stopped: so the new major's
server is asked first whether it accepts the configuration (``postgres -C``), and a
drop-in it refuses is taken away again, with the warning.

The standard library only: the hook may run in the middle of a dist-upgrade, when
python3-psycopg or PyYAML may be unpacked but not configured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.steps import CHANGED, CREATED
from matrix_synapse_setup.files.atomic import Ownership, write_atomic
from matrix_synapse_setup.postgres import tuning

INIT = "init"
# What pg_upgradecluster itself accepts (it untaints its arguments with these).
_VERSION_RE = re.compile(r"\d+(?:\.\d+)?\Z")
_NAME_RE = re.compile(r"[-.\w]+\Z", re.ASCII)
# postgresql-common's own variable for another configuration root (its test suite
# sets it); pg_upgradecluster keeps it in the hooks' environment.
CONF_ROOT_ENV = "PG_CLUSTER_CONF_ROOT"
PG_LIB = Path("/usr/lib/postgresql")

# What to do (decide()).
NOTHING, CARRY = "nothing", "carry"


class Request(NamedTuple):
    old_version: str
    name: str  # the new cluster's name (the old one's, unless --rename was given)
    new_version: str
    phase: str

    def old_confdir(self, etc: Path) -> Path:
        return etc / self.old_version / self.name

    def new_confdir(self, etc: Path) -> Path:
        return etc / self.new_version / self.name


def parse_args(argv: Sequence[str]) -> Request | None:
    """pg_upgradecluster's four arguments; None when they are not what it passes (then
    the hook does nothing: it is not ours to judge another caller)."""
    if len(argv) != 4:
        return None
    old, name, new, phase = argv
    if not (_VERSION_RE.match(old) and _VERSION_RE.match(new)):
        return None
    if not _NAME_RE.match(name) or name in (".", ".."):
        return None
    return Request(old, name, new, phase)


def conf_root(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(CONF_ROOT_ENV) or tuning.ETC)


def decide(request: Request | None, old_has_dropin: bool) -> str:
    """CARRY the drop-in to the new cluster, or do NOTHING.  A renamed cluster
    (``--rename``) is not found under its new name in the old version: nothing then,
    and the next configure writes the drop-in where Synapse's cluster is."""
    if request is None or request.phase != INIT or request.old_version == request.new_version:
        return NOTHING
    return CARRY if old_has_dropin else NOTHING


class HookError(Exception):
    """Why the drop-in could not be carried (one line, for the warning)."""


def carry(request: Request, etc: Path) -> tuple[Path, str]:
    """Write the drop-in the new cluster calls for; (its path, what happened)."""
    new = tuning.read_cluster(request.new_confdir(etc))
    if new is None:
        raise HookError(messages.HOOK_NO_NEW_CLUSTER.format(path=request.new_confdir(etc)))
    if not new.includes_conf_d:
        raise HookError(messages.HOOK_NO_INCLUDE_DIR.format(conf=new.conffile))
    # The cluster's own files are its owner's (pg_createcluster made them so): the
    # drop-in too, as the postinst's superuser child writes it.
    st = new.conffile.stat()
    conf_d = new.dropin.parent
    if not conf_d.is_dir():
        conf_d.mkdir(mode=0o755)
        if os.geteuid() == 0:
            os.chown(conf_d, st.st_uid, st.st_gid)
    old = request.old_confdir(etc) / "conf.d" / tuning.DROPIN_NAME
    try:
        carried = tuning.dropin_max_connections(old.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        carried = None
    text = tuning.text_for(new, carried)
    try:
        before = new.dropin.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None
    if before == text:
        return new.dropin, "unchanged"
    write_atomic(new.dropin, text, Ownership(st.st_uid, st.st_gid, 0o644), crash_point=None)
    refused = refusal(request.new_version, new.confdir)
    if refused is not None:
        # The new cluster would not start with it, at the end of the upgrade, after the
        # old one is stopped: put back what was there.
        if before is None:
            new.dropin.unlink(missing_ok=True)
        else:
            write_atomic(
                new.dropin, before, Ownership(st.st_uid, st.st_gid, 0o644), crash_point=None
            )
        raise HookError(messages.HOOK_REFUSED.format(version=request.new_version, reason=refused))
    return new.dropin, CREATED if before is None else CHANGED


def refusal(version: str, confdir: Path, lib: Path = PG_LIB) -> str | None:
    """Why the new major's server refuses its configuration with our drop-in (``postgres
    -C``, which reads every file and starts nothing, also beside a running server); None
    when it accepts it, or when that server is not there to ask."""
    server = lib / version / "bin" / "postgres"
    if not os.access(server, os.X_OK):
        return None
    # The server refuses to run as root: as the cluster's owner then.
    owner: dict[str, object] = {}
    if os.geteuid() == 0:
        st = (confdir / "postgresql.conf").stat()
        owner = {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}
    try:
        proc = subprocess.run(
            [str(server), "-D", str(confdir), "-C", "shared_buffers"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
            **owner,  # type: ignore[arg-type]
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{server}: {err}"
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    # Its reason is the line before the FATAL one ("parameter ... requires ...").
    reasons = [line for line in lines if "FATAL" not in line and "skipping missing" not in line]
    return (reasons or lines or [f"exit {proc.returncode}"])[-1]


def run(
    argv: Sequence[str], etc: Path | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """The hook: always 0.  Says one line on stderr when it wrote the drop-in, and one
    line of warning, with the fix, when it could not."""
    environ = os.environ if environ is None else environ
    request = parse_args(argv)
    root = etc if etc is not None else conf_root(environ)
    try:
        old_has = (
            request is not None
            and (request.old_confdir(root) / "conf.d" / tuning.DROPIN_NAME).is_file()
        )
        if decide(request, old_has) == NOTHING:
            return 0
        assert request is not None  # noqa: S101 - decide() carries only a request
        path, what = carry(request, root)
        print(messages.HOOK_CARRIED.format(path=path, what=what), file=sys.stderr)
    except Exception as err:  # noqa: BLE001 - an upgrade must never fail because of us
        reason = str(err) if isinstance(err, HookError) else f"{type(err).__name__}: {err}"
        new = f"{request.new_version}/{request.name}" if request else "?"
        print(messages.HOOK_WARNING.format(cluster=new, reason=reason), file=sys.stderr)
    return 0

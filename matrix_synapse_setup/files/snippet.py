"""Synapse's database snippet, /etc/matrix-synapse/conf.d/database.yaml, and its password file.

Rendered from a Jinja2 template with every value passed through a YAML-safe
filter, parsed back and compared with the values before it is used.  It is written
atomically, never world-readable, not even for a moment (files/atomic.py, which says
who may read it), and through ucf, so that an administrator's edits are detected and
never silently lost (dpkg/ucf.py).
"""

from __future__ import annotations

import contextlib
import datetime
import re
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import PACKAGE, PASSFILE, SNIPPET
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.yamlload import YAMLError, safe_dump, safe_load
from matrix_synapse_setup.files.atomic import fix_ownership, passfile_ownership, write_atomic

# The role's password is in PASSFILE, in libpq's password file format, named by the
# snippet's "passfile" (psycopg2 hands it to libpq).  Not in the YAML: ucf shows the
# YAML's differences to an admin, and those must not show a password.  Synapse reads
# only *.yaml in conf.d.  libpq ignores a password file that its group or others can
# read: it is 0600, owned by Synapse's user.

# Versions before 0.5.0 wrote Synapse's systemd drop-in here at run time; it is now
# shipped under /usr/lib/systemd/system/matrix-synapse.service.d/ (the admin's
# directory is /etc).  RUNTIME_DROPIN_TEXT is what they wrote, to tell an edit.
RUNTIME_DROPIN = Path("/etc/systemd/system/matrix-synapse.service.d/matrix-synapse-setup.conf")
TEMPLATE = "database.yaml.j2"

# The values this package manages (the password through the password file):
# everything else in the file (pool sizes, keepalives, comments) is ours to render
# but an admin may edit it.
MANAGED = ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert")
# What the snippet's text says about them.
TEXT_KEYS = ("host", "port", "dbname", "user", "sslmode", "sslrootcert")

RUNTIME_DROPIN_TEXT = """\
# Written by matrix-synapse-setup: Synapse's database is the PostgreSQL cluster
# on this machine, so start Synapse after it.  Removed when the package is
# purged or the database moves to another host (dpkg-reconfigure).
[Unit]
Wants=postgresql.service
After=postgresql.service
"""


# --- rendering ----------------------------------------------------------------


def yaml_scalar(value: Any) -> str:
    """One YAML scalar on one line that safe_load reads back as *value*."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"not a snippet value: {value!r}")
    if isinstance(value, int):
        return str(value)
    text = safe_dump(
        str(value), default_style='"', allow_unicode=True, width=1 << 30, explicit_end=False
    )
    text = text.rstrip("\n")
    if "\n" in text:  # width is huge and control characters are escaped: cannot happen
        raise ValueError("a YAML scalar spans lines")
    return text


def template_source(template_dir: Path | None = None) -> str:
    """The snippet's Jinja2 template, as the package ships it."""
    directory = template_dir or Path(__file__).parent / "templates"
    return (directory / TEMPLATE).read_text(encoding="utf-8")


def load_template(source: str | None = None) -> Any:
    """The snippet's template (the package's, or *source*), compiled: Jinja2 with
    StrictUndefined, every value through the YAML-safe filter."""
    import jinja2

    env = jinja2.Environment(
        autoescape=False,  # noqa: S701 - YAML, not HTML: values go through the yaml filter
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["yaml"] = yaml_scalar
    return env.from_string(template_source() if source is None else source)


def render_template(template: Any, settings: Settings, *, password_set: str | None = None) -> str:
    """The snippet's text for *settings* (whose password must be set), from a compiled
    *template* (:func:`load_template`); parsed back and compared with *settings* before
    it is returned.

    *password_set*: when the role's password was last set (see password_stamp()).  The
    password is in the password file, so without this line a new password would leave
    the YAML unchanged, and ucf would neither ask about an edited file nor replace it."""
    values = text_values(settings) | {"password_set": password_set}
    text = template.render(**values)
    check_round_trip(text, settings)
    return text


def render_source(source: str, settings: Settings, *, password_set: str | None = None) -> str:
    """:func:`render_template` with the template *source*."""
    return render_template(load_template(source), settings, password_set=password_set)


def render(
    settings: Settings, *, password_set: str | None = None, template_dir: Path | None = None
) -> str:
    """:func:`render_template` with the package's template."""
    source = template_source(template_dir)
    return render_template(load_template(source), settings, password_set=password_set)


_STAMP_RE = re.compile(r"^# The role's password was set on (\S+)\.$", re.MULTILINE)


def password_stamp(text: str | None) -> str | None:
    """The "password was set on" time in a snippet's text, if it has one."""
    found = _STAMP_RE.search(text or "")
    return found[1] if found else None


def new_password_stamp(previous: str | None = None, now: datetime.datetime | None = None) -> str:
    """*now* (by default, now), differing from *previous* (the stamp in the file): two
    password changes in the same second must still give ucf two versions."""
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return stamp if stamp != previous else now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def values_of(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in MANAGED}


def text_values(settings: Settings) -> dict[str, Any]:
    """What the template writes: the managed values but the password, and the file
    that holds it."""
    values = {name: getattr(settings, name) for name in TEXT_KEYS}
    values["passfile"] = str(PASSFILE)
    return values


def parse(text: str, *, where: str = str(SNIPPET)) -> dict[str, Any]:
    """The managed values in a snippet's text, and its passfile; SetupError if it is not
    one.  "password" is the one written in the YAML (None when there is none)."""
    try:
        data = safe_load(text)
    except YAMLError as err:
        line = f"line {err.line}" if err.line is not None else "somewhere"
        raise SetupError(messages.SNIPPET_UNREADABLE.format(path=where, reason=line)) from None
    database = data.get("database") if isinstance(data, dict) else None
    args = database.get("args") if isinstance(database, dict) else None
    if not isinstance(args, dict) or database.get("name") != "psycopg2":
        raise SetupError(
            messages.SNIPPET_UNREADABLE.format(
                path=where, reason="no 'database: {name: psycopg2, args: ...}'"
            )
        )
    found = {name: args.get(name) for name in MANAGED}
    found["port"] = args.get("port", 5432)
    found["passfile"] = args.get("passfile")
    found["password_set"] = password_stamp(text)
    return found


def check_round_trip(text: str, settings: Settings) -> None:
    """Refuse to use a rendering that does not read back as exactly *settings*."""
    found = parse(text, where="the rendered snippet")
    wanted = text_values(settings) | {"password": None}
    for name in (*TEXT_KEYS, "passfile", "password"):
        if found[name] != wanted[name] or type(found[name]) is not type(wanted[name]):
            raise SetupError(messages.SNIPPET_ROUND_TRIP.format(field=name))


def effective(found: dict[str, Any], passfile: str | None = None) -> dict[str, Any]:
    """*found* (from parse) with the password libpq will use: the one in the YAML, else
    the one the password file names gives for the role.  *passfile*: our password
    file's text, when the caller has read it."""
    if found.get("password") is not None or not found.get("passfile"):
        return found
    user = str(found.get("user") or "")
    if passfile is not None and found["passfile"] == str(PASSFILE):
        return found | {"password": password_in(passfile, user)}
    return found | {"password": read_passfile(Path(str(found["passfile"])), user)}


def read(path: Path = SNIPPET) -> dict[str, Any] | None:
    """The managed values of the installed snippet (the password resolved), None when
    there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise SetupError(
            messages.SNIPPET_UNREADABLE.format(path=path, reason=type(err).__name__)
        ) from None
    return effective(parse(text, where=str(path)))


def differences(found: dict[str, Any] | None, settings: Settings) -> list[str]:
    """The managed values in which *found* (parsed, not resolved) would connect Synapse
    otherwise than *settings* with our password file."""
    if found is None:
        return ["the whole file"]
    wanted = values_of(settings)
    fields = [name for name in TEXT_KEYS if found.get(name) != wanted[name]]
    if found.get("password") is not None:  # in the YAML: it wins over any password file
        if found["password"] != settings.password:
            fields.append("password")
    elif found.get("passfile") != str(PASSFILE):
        fields.append("passfile")
    return fields


def same_values(found: dict[str, Any] | None, settings: Settings) -> bool:
    return not differences(found, settings)


# --- the password file (libpq's format) -------------------------------------------


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _pgpass_fields(line: str) -> list[str]:
    fields, current, escaped = [], [], False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


def passfile_text(settings: Settings) -> str:
    # Any host, port and database: the file serves this snippet's connection only, and
    # an admin who edits the host in the snippet must not lose the login.
    return (
        f"# Written by {PACKAGE} for {SNIPPET}:\n"
        "# the password of Synapse's PostgreSQL role (libpq password file format).\n"
        f"*:*:*:{_pgpass_escape(settings.user)}:{_pgpass_escape(settings.password)}\n"
    )


def password_in(text: str, user: str) -> str | None:
    """The password a password file's *text* (libpq's format) gives for *user*."""
    for line in text.split("\n"):  # libpq's lines: \n only
        if not line.strip() or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) == 5 and fields[3] in (user, "*"):
            return fields[4]
    return None


def read_passfile(path: Path, user: str) -> str | None:
    """The password *path* (libpq's format) gives for *user*, None if none."""
    try:
        return password_in(path.read_text(encoding="utf-8"), user)
    except (OSError, UnicodeDecodeError):
        return None


def write_passfile(settings: Settings, path: Path = PASSFILE) -> bool:
    """Put the role's password in the password file; True if it changed."""
    owner = passfile_ownership()
    text = passfile_text(settings)
    try:
        if path.read_text(encoding="utf-8") == text:
            fix_ownership(path, owner)
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text, owner)
    return True


# --- the systemd drop-in of versions before 0.5.0 ------------------------------------


def remove_runtime_dropin(path: Path = RUNTIME_DROPIN) -> bool | None:
    """Remove the drop-in older versions wrote into /etc (ours is shipped under
    /usr/lib now).  True: removed; None: there was none; False: kept, because the
    admin edited it (theirs now, in their directory)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return False
    if text != RUNTIME_DROPIN_TEXT:
        return False
    path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return True

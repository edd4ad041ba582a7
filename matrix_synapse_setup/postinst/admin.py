"""The homeserver's first admin account (debconf's admin-user and admin-password).

Synapse creates accounts through its shared-secret registration API
(``/_synapse/admin/v1/register``: a nonce, then an HMAC-SHA1 of nonce, name,
password and "admin" keyed with ``registration_shared_secret``).  The secret:

- the one Synapse's effective configuration already has (``registration_shared_secret``
  inline, or a file named by ``registration_shared_secret_path``), used as it is: both
  keys at once would stop Synapse from starting;
- otherwise one this package generates once, in :data:`SECRET_FILE` (readable by root
  and Synapse's user only), which :data:`REGISTRATION_SNIPPET` names (written through
  ucf, like the database snippet).  Neither ever reaches a command line or a log.

What this package created is recorded in files/state.py's ``RECORD`` (root only, 0600):
the account and the access token of the session its registration opened, named
"matrix-synapse-setup" in the account's session list.  That token is what lets a later
``dpkg-reconfigure`` with a new password change it through Synapse's admin API; without
it, an account that exists is left alone.

The password stays in debconf's root-only password store only until it is applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets
import tempfile
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import SYNAPSE_CONFD, SYNAPSE_USER
from matrix_synapse_setup.dpkg import ucf
from matrix_synapse_setup.files import atomic
from matrix_synapse_setup.files import state as state_files
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import service as services
from matrix_synapse_setup.synapse.client import Client, HttpError

SECRET_FILE = SYNAPSE_CONFD / "registration.secret"
REGISTRATION_SNIPPET = SYNAPSE_CONFD / "registration.yaml"
WAIT_SECONDS = 90  # how long a run waits for Synapse to answer
PROBE_SECONDS = 10  # one request to a Synapse that its service manager does not know

REGISTRATION_TEXT = f"""\
# Managed by matrix-synapse-setup: the shared secret that lets it (and
# register_new_matrix_user -c with this file's secret) create accounts.  The
# secret itself is in the file named here, which only root and Synapse can read.
registration_shared_secret_path: {SECRET_FILE}
"""


# --- Synapse's configuration --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and how to reach Synapse, from its effective configuration."""

    url: str | None  # its client API on this machine; None: no listener found
    server_name: str | None
    secret: str | None  # the shared secret in effect
    source: str  # where the secret is: "inline", "path" or "none"


def client_url(config: dict[str, Any]) -> str | None:
    """Synapse's client API on this machine (synapse_config.client_listener)."""
    return synapse_config.client_listener(config)


def inspect(config: dict[str, Any]) -> Target:
    """What Synapse's effective configuration says about registration."""
    inline = config.get("registration_shared_secret")
    path = config.get("registration_shared_secret_path")
    secret: str | None = None
    source = "none"
    if inline:
        secret, source = str(inline), "inline"
    elif path:
        source = "path"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            secret = Path(str(path)).read_text(encoding="utf-8").strip() or None
    name = config.get("server_name")
    return Target(client_url(config), str(name) if name else None, secret, source)


def effective_config() -> dict[str, Any]:
    merged, _ = synapse_config.load(synapse_config.config_files())
    return merged


def ensure_secret(conv: Any = None) -> bool:
    """Generate the shared secret and the snippet naming it, once.  True when Synapse
    must restart to read them."""
    owner = atomic.ownership()
    changed = False
    if not SECRET_FILE.exists():
        atomic.write_atomic(SECRET_FILE, secrets.token_urlsafe(48) + "\n", owner)
        changed = True
    else:
        changed = atomic.fix_ownership(SECRET_FILE, owner)
    if not REGISTRATION_SNIPPET.exists():
        fd, tmp = tempfile.mkstemp(prefix="registration.", suffix=".yaml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(REGISTRATION_TEXT)
            os.chmod(tmp, 0o644)
            ucf.ucf(conv, ["--debconf-ok", tmp, str(REGISTRATION_SNIPPET)])
            ucf.ucfr_register(REGISTRATION_SNIPPET)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        changed = True
    return changed


# --- the whole step -----------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    """What a run did with the account: "created", "unchanged", "password-changed",
    "left-alone", "waiting" (nothing could be done yet; the password stays)."""

    status: str
    message: str

    @property
    def applied(self) -> bool:
        """Whether the password's part is done (it may leave debconf)."""
        return self.status != "waiting"


def ensure(
    user: str,
    password: str,
    *,
    say: Any,
    conv: Any = None,
    restart: Any = None,
    installed: Any = None,
    running: Any = None,
    wait_seconds: float = WAIT_SECONDS,
) -> Outcome:
    """Create the admin account *user*, or change its password; see the module's text.
    *restart*, *installed*, *running*: services' functions (parameters for tests)."""
    installed = installed or services.synapse_installed
    running = running or services.synapse_running
    restart = restart or services.restart_synapse
    record = state_files.read_record()
    if not installed() or not _synapse_user_exists():
        return Outcome("waiting", messages.ADMIN_NO_SYNAPSE.format(user=user))
    config = effective_config()
    target = inspect(config)
    if target.server_name is None:
        raise SetupError(messages.ADMIN_NO_SERVER_NAME)
    user_id = f"@{user}:{target.server_name}"
    secret_written = False
    if target.source == "none":
        if ensure_secret(conv):
            say(
                messages.ADMIN_SECRET_WRITTEN.format(path=SECRET_FILE, snippet=REGISTRATION_SNIPPET)
            )
            restart("try-restart")
            secret_written = True
        target = inspect(effective_config())
    if target.secret is None:
        where = config.get("registration_shared_secret_path") or SECRET_FILE
        raise SetupError(messages.ADMIN_SECRET_UNREADABLE.format(path=where))
    if target.url is None:
        raise SetupError(messages.ADMIN_NO_LISTENER)
    client = Client(target.url)
    # Synapse's own answer decides; the service manager's view is a hint only: a Synapse
    # in a container, under another supervisor or started by hand is unknown to it.
    if running():
        if not client.wait(wait_seconds, say):
            return Outcome(
                "waiting",
                messages.ADMIN_NO_ANSWER.format(
                    url=target.url, seconds=int(wait_seconds), user_id=user_id
                ),
            )
    elif not answers(target.url):
        return Outcome(
            "waiting", messages.ADMIN_NOT_ANSWERING.format(url=target.url, user_id=user_id)
        )
    elif secret_written:
        # The restart reached no process: the Synapse that answers has no secret yet.
        return Outcome(
            "waiting",
            messages.ADMIN_RESTART_FOR_SECRET.format(
                url=target.url, snippet=REGISTRATION_SNIPPET, user_id=user_id
            ),
        )
    try:
        return _apply(client, target.secret, user, user_id, password, record)
    except HttpError as err:
        raise SetupError(
            messages.ADMIN_API_FAILED.format(user_id=user_id, error=err.text())
        ) from None
    except OSError as err:
        reason = getattr(err, "reason", None) or err
        raise SetupError(messages.ADMIN_API_FAILED.format(user_id=user_id, error=reason)) from None


def answers(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether Synapse's client listener at *url* answers /_matrix/client/versions now."""
    try:
        Client(url, timeout).call("GET", "/_matrix/client/versions")
    except (OSError, HttpError, ValueError):
        return False
    return True


def _apply(
    client: Client, secret: str, user: str, user_id: str, password: str, record: dict[str, str]
) -> Outcome:
    mine = record.get("user_id") == user_id
    if password:
        try:
            answer = client.register(secret, user, password)
        except HttpError as err:
            if err.errcode != "M_USER_IN_USE":
                raise
        else:
            state_files.write_record(
                {
                    "user_id": str(answer.get("user_id", user_id)),
                    "access_token": str(answer["access_token"]),
                    "device_id": str(answer.get("device_id", "")),
                }
            )
            return Outcome("created", messages.ADMIN_CREATED.format(user_id=user_id))
    elif mine:
        return Outcome("left-alone", messages.ADMIN_EXISTS.format(user_id=user_id))
    else:
        raise SetupError(messages.ADMIN_PASSWORD_NEEDED.format(user_id=user_id))
    # The account exists.  Its password already?  (A session opened to find out is
    # closed again, unless it becomes the one this package keeps.)
    session = client.login(user, password)
    if session is not None:
        if mine and _token_works(client, record):
            client.logout(session["access_token"])
        else:
            _keep(session, user_id)
        return Outcome("unchanged", messages.ADMIN_PASSWORD_SAME.format(user_id=user_id))
    if not mine:
        return Outcome("left-alone", messages.ADMIN_NOT_OURS.format(user_id=user_id))
    if not _token_works(client, record):
        raise SetupError(
            messages.ADMIN_TOKEN_GONE.format(user_id=user_id, record=state_files.RECORD)
        )
    client.reset_password(record["access_token"], user_id, password)
    # Every session of the account ended, ours too: open the one we keep.
    session = client.login(user, password)
    if session is None:
        raise SetupError(messages.ADMIN_API_FAILED.format(user_id=user_id, error="login refused"))
    _keep(session, user_id)
    return Outcome("password-changed", messages.ADMIN_PASSWORD_CHANGED.format(user_id=user_id))


def _synapse_user_exists() -> bool:
    try:
        pwd.getpwnam(SYNAPSE_USER)
    except KeyError:
        return False
    return True


def _token_works(client: Client, record: dict[str, str]) -> bool:
    token = record.get("access_token")
    if not token:
        return False
    try:
        whoami = client.call("GET", "/_matrix/client/v3/account/whoami", token=token)
    except HttpError:
        return False
    return whoami.get("user_id") == record.get("user_id")


def _keep(session: dict[str, Any], user_id: str) -> None:
    state_files.write_record(
        {
            "user_id": str(session.get("user_id", user_id)),
            "access_token": str(session["access_token"]),
            "device_id": str(session.get("device_id", "")),
        }
    )

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

What this package created is recorded in :data:`RECORD` (root only, 0600): the account
and the access token of the session its registration opened, named
"matrix-synapse-setup" in the account's session list.  That token is what lets a later
``dpkg-reconfigure`` with a new password change it through Synapse's admin API; without
it, an account that exists is left alone.

The password stays in debconf's root-only password store only until it is applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError

SECRET_FILE = Path("/etc/matrix-synapse/conf.d/registration.secret")
REGISTRATION_SNIPPET = Path("/etc/matrix-synapse/conf.d/registration.yaml")
RECORD = Path("/var/lib/matrix-synapse-setup/admin.json")
DEVICE_NAME = "matrix-synapse-setup"
# Synapse's rule for the local part of a new user ID (synapse.types).
LOCALPART = re.compile(r"[a-z0-9._=/+-]{1,255}")
PASSWORD_LIMIT = 512  # Synapse refuses longer passwords
WAIT_SECONDS = 90  # how long a run waits for Synapse to answer
MAX_ANSWER = 1 << 20  # bytes read of one answer: Synapse's are small

REGISTRATION_TEXT = f"""\
# Managed by matrix-synapse-setup: the shared secret that lets it (and
# register_new_matrix_user -c with this file's secret) create accounts.  The
# secret itself is in the file named here, which only root and Synapse can read.
registration_shared_secret_path: {SECRET_FILE}
"""


def validate_user(value: str) -> str:
    """The local part of the admin's Matrix ID (empty: no account)."""
    if value and not LOCALPART.fullmatch(value):
        raise SetupError(messages.BAD_ADMIN_USER.format(value=value))
    return value


def validate_password(value: str) -> str:
    if len(value) > PASSWORD_LIMIT:
        raise SetupError(messages.BAD_PASSWORD_LENGTH.format(limit=PASSWORD_LIMIT))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SetupError(messages.BAD_PASSWORD_CHARS)
    if value and not value.strip():
        raise SetupError(messages.BAD_PASSWORD_BLANK)
    return value


# --- what this package created ----------------------------------------------------------


def read_record(path: Path | None = None) -> dict[str, str]:
    path = path or RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(record: dict[str, str], path: Path | None = None) -> None:
    from matrix_synapse_setup.files.snippet import Ownership, write_atomic

    path = path or RECORD
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1) + "\n", Ownership(0, 0, 0o600))


def created_here(user: str, record: dict[str, str]) -> bool:
    """True when *user* is the account this package created (and recorded)."""
    user_id = record.get("user_id", "")
    return bool(user) and user_id.startswith(f"@{user}:")


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
    from matrix_synapse_setup.synapse.config import client_listener

    return client_listener(config)


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
    from matrix_synapse_setup.synapse import config as synapse_config

    merged, _ = synapse_config.load(synapse_config.config_files())
    return merged


def ensure_secret(conv: Any = None) -> bool:
    """Generate the shared secret and the snippet naming it, once.  True when Synapse
    must restart to read them."""
    from matrix_synapse_setup.files import snippet

    owner = snippet.ownership()
    changed = False
    if not SECRET_FILE.exists():
        snippet.write_atomic(SECRET_FILE, secrets.token_urlsafe(48) + "\n", owner)
        changed = True
    else:
        changed = snippet.fix_ownership(SECRET_FILE, owner)
    if not REGISTRATION_SNIPPET.exists():
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix="registration.", suffix=".yaml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(REGISTRATION_TEXT)
            os.chmod(tmp, 0o644)
            snippet.ucf(conv, ["--debconf-ok", tmp, str(REGISTRATION_SNIPPET)])
            snippet.ucfr_register(REGISTRATION_SNIPPET)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        changed = True
    return changed


# --- Synapse's HTTP APIs -----------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status} {body.get('errcode', '')}")
        self.status = status
        self.body = body

    @property
    def errcode(self) -> str:
        return str(self.body.get("errcode", ""))

    def text(self) -> str:
        return f"HTTP {self.status} {self.errcode} {self.body.get('error', '')}".strip()


class Client:
    """JSON over HTTP(S) to Synapse's client listener on this machine, never through a
    proxy; a certificate is not checked at a loopback address only.

    ssl and urllib are imported here, not with the module: every postinst checks the
    admin-user answer (validate_user), and most runs never talk to Synapse (issue 11)."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        import ssl
        import urllib.parse
        import urllib.request

        from matrix_synapse_setup.core.settings import is_local

        self.url = url
        self.timeout = timeout
        # Never through a proxy (an admin's http_proxy would not reach our loopback).
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        host = urllib.parse.urlsplit(url).hostname or ""
        if url.startswith("https:") and is_local(host):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # Synapse's own loopback listener
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str = ""
    ) -> dict[str, Any]:
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with self.opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read(MAX_ANSWER) or b"{}")
        except urllib.error.HTTPError as err:
            try:
                payload = json.loads(err.read(MAX_ANSWER) or b"{}")
            except ValueError:
                payload = {}
            raise HttpError(err.code, payload if isinstance(payload, dict) else {}) from None

    def wait(self, timeout: float, say: Any) -> bool:
        """Wait until /_matrix/client/versions answers; False after *timeout* seconds."""
        say(messages.ADMIN_WAITING.format(url=self.url, seconds=int(timeout)))
        end = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", "/_matrix/client/versions")
                return True
            except (OSError, HttpError, ValueError):
                if time.monotonic() >= end:
                    return False
                time.sleep(0.5)

    def register(self, secret: str, user: str, password: str) -> dict[str, Any]:
        nonce = self.call("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join(part.encode() for part in (nonce, user, password, "admin")))
        body = {
            "nonce": nonce,
            "username": user,
            "displayname": user,
            "password": password,
            "admin": True,
            "mac": mac.hexdigest(),
        }
        return self.call("POST", "/_synapse/admin/v1/register", body)

    def login(self, user: str, password: str) -> dict[str, Any] | None:
        """A new session for *user*, or None when the password is not its password."""
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "initial_device_display_name": DEVICE_NAME,
        }
        try:
            return self.call("POST", "/_matrix/client/v3/login", body)
        except HttpError as err:
            if err.errcode == "M_FORBIDDEN":
                return None
            raise

    def logout(self, token: str) -> None:
        with contextlib.suppress(HttpError, OSError):
            self.call("POST", "/_matrix/client/v3/logout", {}, token=token)

    def reset_password(self, token: str, user_id: str, password: str) -> None:
        import urllib.parse

        quoted = urllib.parse.quote(user_id, safe="")
        body = {"new_password": password, "logout_devices": True}
        self.call("POST", f"/_synapse/admin/v1/reset_password/{quoted}", body, token=token)


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
    from matrix_synapse_setup.synapse import service as services

    installed = installed or services.synapse_installed
    running = running or services.synapse_running
    restart = restart or services.restart_synapse
    record = read_record()
    if not installed() or not _synapse_user_exists():
        return Outcome("waiting", messages.ADMIN_NO_SYNAPSE.format(user=user))
    config = effective_config()
    target = inspect(config)
    if target.server_name is None:
        raise SetupError(messages.ADMIN_NO_SERVER_NAME)
    user_id = f"@{user}:{target.server_name}"
    if target.source == "none":
        if ensure_secret(conv):
            say(
                messages.ADMIN_SECRET_WRITTEN.format(path=SECRET_FILE, snippet=REGISTRATION_SNIPPET)
            )
            restart("try-restart")
        target = inspect(effective_config())
    if target.secret is None:
        where = config.get("registration_shared_secret_path") or SECRET_FILE
        raise SetupError(messages.ADMIN_SECRET_UNREADABLE.format(path=where))
    if target.url is None:
        raise SetupError(messages.ADMIN_NO_LISTENER)
    if not running():
        return Outcome("waiting", messages.ADMIN_SYNAPSE_STOPPED.format(user_id=user_id))
    client = Client(target.url)
    if not client.wait(wait_seconds, say):
        return Outcome(
            "waiting",
            messages.ADMIN_NO_ANSWER.format(
                url=target.url, seconds=int(wait_seconds), user_id=user_id
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
            write_record(
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
        raise SetupError(messages.ADMIN_TOKEN_GONE.format(user_id=user_id, record=RECORD))
    client.reset_password(record["access_token"], user_id, password)
    # Every session of the account ended, ours too: open the one we keep.
    session = client.login(user, password)
    if session is None:
        raise SetupError(messages.ADMIN_API_FAILED.format(user_id=user_id, error="login refused"))
    _keep(session, user_id)
    return Outcome("password-changed", messages.ADMIN_PASSWORD_CHANGED.format(user_id=user_id))


def _synapse_user_exists() -> bool:
    import pwd

    from matrix_synapse_setup.files.snippet import SYNAPSE_USER

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
    write_record(
        {
            "user_id": str(session.get("user_id", user_id)),
            "access_token": str(session["access_token"]),
            "device_id": str(session.get("device_id", "")),
        }
    )


def say_default(text: str) -> None:
    print(f"matrix-synapse-setup: {text}", file=sys.stderr, flush=True)

"""Synapse's HTTP APIs, as a client on this machine: JSON over HTTP(S), never through a
proxy, a certificate unchecked at a loopback address only.

ssl and urllib are imported when a :class:`Client` is made, not with this module: the
postinst's admin step imports it with the rest of the use case, and most runs never
talk to Synapse.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.paths import PACKAGE
from matrix_synapse_setup.core.settings import is_local

# The name of the sessions this package opens, in the account's session list.
DEVICE_NAME = PACKAGE
MAX_ANSWER = 1 << 20  # bytes read of one answer: Synapse's are small


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
    proxy; a certificate is not checked at a loopback address only."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        import ssl
        import urllib.parse
        import urllib.request

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

    def wait(self, timeout: float, say: Callable[[str], None]) -> bool:
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

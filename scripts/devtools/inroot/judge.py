"""The Matrix client that judges a system-test root (runs inside it, in /opt/venvs/judge).

    judge.py wait [--timeout S]      wait until Synapse answers /_matrix/client/versions
    judge.py chat [--messages N]     register a new user (shared-secret admin API), log in with
                                     matrix-nio, create a room, send N messages, read them back
    judge.py recheck [--messages N]  every user made before: log in again, read its room (all
                                     messages, in order), send N more and read them back
    judge.py passwd                  every user made before changes its password (client API)
    judge.py admin --user U          the admin account U (password on stdin) logs in with
                                     matrix-nio, creates a room, sends a message and reads it
                                     back, and calls the admin API (it is a server admin)
    judge.py refused --user U        a login of U with the password on stdin is refused

--server URL (every command) talks to Synapse there instead of 127.0.0.1:8008: through a
reverse proxy, for instance.  --secret-file FILE (chat) reads the registration shared secret
from another configuration, where it may be nested (Dendrite's client_api section);
--settle S lets a read back wait up to S seconds for the messages sent to show.

Users, passwords and messages are kept in /root/judge-state.json between calls, so a
recheck after a restart or a reconfiguration proves the data is still in the same database.
Prints one line per step; exits 1 with the reason on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from nio import (
    AsyncClient,
    LoginResponse,
    MessageDirection,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

SERVER = "http://127.0.0.1:8008"
SECRET_FILE = Path("/etc/matrix-synapse/conf.d/zz-test-registration.yaml")
STATE = Path("/root/judge-state.json")
# Seconds a read may wait for the messages sent (--settle): 0 for Synapse, whose sends
# are readable once they return; Dendrite's sync API learns of an event from its stream
# after the send has returned.
SETTLE = 0.0


class Failed(Exception):
    pass


def http(method: str, path: str, body: dict | None = None, token: str = "") -> dict:
    """A JSON request to Synapse on loopback (SERVER: an http:// URL of the test's)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SERVER + path, data=data, method=method)  # noqa: S310
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return json.load(resp)
    except urllib.error.HTTPError as err:
        raise Failed(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}") from err


def wait(timeout: float) -> None:
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < timeout:
        try:
            versions = http("GET", "/_matrix/client/versions")
            took = time.monotonic() - start
            print(f"synapse answers after {took:.1f} s: {versions['versions'][-1]}")
            return
        except (OSError, Failed) as err:
            last = str(err)
        time.sleep(0.3)
    raise Failed(f"Synapse did not answer {SERVER} within {timeout:.0f} s (last error: {last})")


def register(user: str, password: str) -> None:
    text = SECRET_FILE.read_text()
    match = re.search(r"^[ \t]*registration_shared_secret:\s*\"?([^\"\n]+)\"?", text, re.M)
    if not match:
        raise Failed(f"no registration_shared_secret in {SECRET_FILE}")
    nonce = http("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(match.group(1).encode(), digestmod=hashlib.sha1)
    for part in (nonce, user, password, "notadmin"):
        mac.update(part.encode())
        if part != "notadmin":
            mac.update(b"\x00")
    body = {"nonce": nonce, "username": user, "password": password, "admin": False,
            "mac": mac.hexdigest()}  # fmt: skip
    http("POST", "/_synapse/admin/v1/register", body)
    print(f"registered @{user} (shared-secret admin API)")


async def login(user: str, password: str) -> AsyncClient:
    client = AsyncClient(SERVER, user)
    resp = await client.login(password)
    if not isinstance(resp, LoginResponse):
        await client.close()
        raise Failed(f"login of {user} failed: {resp}")
    print(f"logged in as {resp.user_id}")
    return client


async def send(client: AsyncClient, room: str, bodies: list[str]) -> None:
    for body in bodies:
        resp = await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": body})
        if not isinstance(resp, RoomSendResponse):
            raise Failed(f"sending {body!r} failed: {resp}")
    print(f"sent {len(bodies)} messages")


async def read_back(client: AsyncClient, room: str, expected: list[str]) -> None:
    deadline = time.monotonic() + SETTLE
    while True:
        sync = await client.sync(timeout=0)
        if not isinstance(sync, SyncResponse):
            raise Failed(f"sync failed: {sync}")
        resp = await client.room_messages(
            room, start=sync.next_batch, direction=MessageDirection.back, limit=len(expected) + 50
        )
        if not isinstance(resp, RoomMessagesResponse):
            raise Failed(f"reading the room failed: {resp}")
        seen = [ev.body for ev in reversed(resp.chunk) if isinstance(ev, RoomMessageText)]
        if seen == expected:
            break
        if time.monotonic() >= deadline:
            raise Failed(f"messages read back differ: expected {expected}, seen {seen}")
        await asyncio.sleep(0.2)
    print(f"read back {len(seen)} messages in order")


async def room_with(client: AsyncClient, name: str, bodies: list[str]) -> str:
    """A new room named *name* with *bodies* sent and read back in order; its id."""
    created = await client.room_create(name=name)
    if not isinstance(created, RoomCreateResponse):
        raise Failed(f"creating a room failed: {created}")
    print(f"created room {created.room_id}")
    await send(client, created.room_id, bodies)
    await read_back(client, created.room_id, bodies)
    return created.room_id


async def chat(count: int, state: dict) -> None:
    user = "judge" + secrets.token_hex(4)
    password = secrets.token_urlsafe(18)
    register(user, password)
    client = await login(user, password)
    bodies = [f"{user} message {i}" for i in range(count)]
    try:
        room = await room_with(client, f"room of {user}", bodies)
    finally:
        await client.close()
    state["users"].append({"user": user, "password": password, "room": room, "messages": bodies})


async def recheck(count: int, state: dict) -> None:
    if not state["users"]:
        raise Failed("no user was made before: run `chat` first")
    for entry in state["users"]:
        client = await login(entry["user"], entry["password"])
        try:
            await read_back(client, entry["room"], entry["messages"])
            more = [f"{entry['user']} message {len(entry['messages']) + i}" for i in range(count)]
            await send(client, entry["room"], more)
            entry["messages"] += more
            await read_back(client, entry["room"], entry["messages"])
        finally:
            await client.close()


async def passwd(state: dict) -> None:
    if not state["users"]:
        raise Failed("no user was made before: run `chat` first")
    for entry in state["users"]:
        client = await login(entry["user"], entry["password"])
        new = entry["password"] + "-changed"
        body = {
            "new_password": new,
            "logout_devices": False,
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": entry["user"]},
                "password": entry["password"],
            },
        }
        try:
            http("POST", "/_matrix/client/v3/account/password", body, token=client.access_token)
        finally:
            await client.close()
        entry["password"] = new
        print(f"changed the password of {entry['user']}")


async def admin(user: str, password: str) -> None:
    client = await login(user, password)
    try:
        await room_with(client, f"first room of {user}", [f"hello from the first admin {user}"])
        user_id = client.user_id
        info = http("GET", f"/_synapse/admin/v2/users/{user_id}", token=client.access_token)
        if info.get("admin") is not True:
            raise Failed(f"{user_id} is not a server admin: {info}")
        print(f"admin API: {user_id} is a server admin")
    finally:
        await client.close()


async def refused(user: str, password: str) -> None:
    client = AsyncClient(SERVER, user)
    try:
        resp = await client.login(password)
        if isinstance(resp, LoginResponse):
            raise Failed(f"{user} logged in with a password that should be refused")
        print(f"login of {user} refused: {getattr(resp, 'status_code', '')}")
    finally:
        await client.close()


def main() -> int:
    global SERVER, SECRET_FILE, SETTLE  # the one server this run talks to, as told
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command", choices=("wait", "chat", "recheck", "passwd", "admin", "refused")
    )
    parser.add_argument("--user")
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--secret-file", type=Path, default=SECRET_FILE)
    parser.add_argument("--settle", type=float, default=SETTLE)
    args = parser.parse_args()
    SERVER = args.server.rstrip("/")
    SECRET_FILE = args.secret_file
    SETTLE = args.settle
    state = json.loads(STATE.read_text()) if STATE.exists() else {"users": []}
    try:
        if args.command == "wait":
            wait(args.timeout)
        elif args.command == "chat":
            asyncio.run(chat(args.messages, state))
        elif args.command == "passwd":
            asyncio.run(passwd(state))
        elif args.command in ("admin", "refused"):
            password = sys.stdin.read().rstrip("\n")
            check = admin if args.command == "admin" else refused
            asyncio.run(check(args.user, password))
        else:
            asyncio.run(recheck(args.messages, state))
    except Failed as err:
        print(f"judge: {err}")
        return 1
    finally:
        STATE.write_text(json.dumps(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())

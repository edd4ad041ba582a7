#!/usr/bin/python3
"""Load generator for a running Synapse (test and benchmark helper, not shipped).

Fills a homeserver through its client-server API so that we have realistic
databases to migrate and to measure: it registers users with the shared-secret
admin API, logs them in, creates rooms, lets the users join them and sends
messages from several concurrent senders. It can also time `/sync` (timeout=0)
and report the median.

It talks to a loopback address only, uses the standard library only and stops by
itself (after the requested work or --max-seconds). Progress goes to stderr; the
last line on stdout is one JSON object with the counts, the elapsed seconds and
the messages per second.

Users are named PREFIX-0 … PREFIX-(N-1); users that already exist are logged in
with --password, so the script can run again against the same server (each run
creates new rooms). Example:

    synapse_load.py --secret-file /etc/matrix-synapse/homeserver.yaml \\
        --users 20 --rooms 10 --messages 50000 --senders 8
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import ipaddress
import json
import resource
import secrets
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: dict | str) -> None:
        self.status = status
        self.body = body
        self.errcode = body.get("errcode", "") if isinstance(body, dict) else ""
        super().__init__(f"{method} {path.split('?')[0]} -> HTTP {status}: {body}")


def loopback_server(url: str) -> urllib.parse.SplitResult:
    """Parse --server and refuse anything that is not a loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"--server must be an http(s) URL, got {url!r}")
    host = parts.hostname
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80)}
    except OSError as exc:
        raise SystemExit(f"cannot resolve {host!r}: {exc}") from exc
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise SystemExit(f"--server must be a loopback address; {host} is {address}")
    return parts


def read_secret(path: str) -> str:
    """Read registration_shared_secret from a YAML file (plain or quoted scalar)."""
    key = "registration_shared_secret:"
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith(key):
                continue
            value = line[len(key) :].strip()
            if value.startswith("'") and value.endswith("'") and len(value) >= 2:
                return value[1:-1].replace("''", "'")
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                return json.loads(value)
            return value.split(" #")[0].strip()
    raise SystemExit(f"{path}: no top-level registration_shared_secret")


class Client:
    """A small JSON client with one keep-alive connection per thread."""

    def __init__(self, server: urllib.parse.SplitResult, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.server.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self.server.hostname, self.server.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def request(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(8):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 7:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = raw.decode(errors="replace")
            if response.status == 429 and isinstance(payload, dict):
                time.sleep(payload.get("retry_after_ms", 500) / 1000)
                continue
            if response.status >= 400:
                raise ApiError(method, path, response.status, payload)
            return payload if isinstance(payload, dict) else {}
        raise ApiError(method, path, 429, "still rate-limited after 8 attempts")


@dataclass
class User:
    name: str
    user_id: str = ""
    token: str = ""
    sent: int = 0
    rooms: list[str] = field(default_factory=list)


@dataclass
class Counts:
    registered: int = 0
    existing: int = 0
    logins: int = 0
    rooms: int = 0
    joins: int = 0
    messages: int = 0
    receipts: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def register(client: Client, secret: str, user: User, password: str, counts: Counts) -> None:
    path = "/_synapse/admin/v1/register"
    nonce = client.request("GET", path)["nonce"]
    message = b"\x00".join(p.encode() for p in (nonce, user.name, password, "notadmin"))
    mac = hmac.new(secret.encode(), message, digestmod=hashlib.sha1)
    body = {
        "nonce": nonce,
        "username": user.name,
        "password": password,
        "admin": False,
        "mac": mac.hexdigest(),
    }
    try:
        client.request("POST", path, body)
        counts.add("registered")
    except ApiError as exc:
        if exc.errcode != "M_USER_IN_USE":
            raise
        counts.add("existing")


def login(client: Client, user: User, password: str, counts: Counts) -> None:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.name},
        "password": password,
        "initial_device_display_name": "synapse_load",
    }
    reply = client.request("POST", "/_matrix/client/v3/login", body)
    user.user_id = reply["user_id"]
    user.token = reply["access_token"]
    counts.add("logins")


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def run_parallel(workers: int, jobs: list, what: str, counts: Counts, deadline: float) -> None:
    """Run callables on a pool; report progress; stop submitting after the deadline."""
    if not jobs:
        return
    done = 0
    last = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = set()
        index = 0
        while index < len(jobs) or pending:
            while index < len(jobs) and len(pending) < workers * 4:
                if time.monotonic() > deadline:
                    progress(f"{what}: --max-seconds reached, not submitting more")
                    index = len(jobs)
                    break
                pending.add(pool.submit(jobs[index]))
                index += 1
            if not pending:
                break
            finished = next(as_completed(pending))
            pending.discard(finished)
            done += 1
            try:
                finished.result()
            except (ApiError, OSError, http.client.HTTPException) as exc:
                counts.add("errors")
                if counts.errors <= 5:
                    progress(f"{what}: error: {exc}")
                if counts.errors > 100:
                    raise SystemExit("more than 100 errors, giving up") from exc
            now = time.monotonic()
            if now - last >= 5 or done == len(jobs):
                last = now
                progress(f"{what}: {done}/{len(jobs)}")


def measure_sync(client: Client, user: User, samples: int) -> list[float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        client.request("GET", "/_matrix/client/v3/sync?timeout=0", token=user.token)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8008", help="loopback URL")
    parser.add_argument(
        "--secret-file", help="YAML file with registration_shared_secret (needed to register)"
    )
    parser.add_argument("--users", type=int, default=10, help="users (default 10)")
    parser.add_argument("--rooms", type=int, default=5, help="new rooms (default 5)")
    parser.add_argument("--messages", type=int, default=1000, help="messages (default 1000)")
    parser.add_argument("--senders", type=int, default=4, help="concurrent senders (default 4)")
    parser.add_argument("--prefix", default="load", help="user name prefix (default load)")
    parser.add_argument("--password", default="load-password", help="password of every user")
    parser.add_argument(
        "--sync-samples", type=int, default=0, help="time this many /sync calls (default 0)"
    )
    parser.add_argument(
        "--receipt-every",
        type=int,
        default=100,
        help="each sender marks its Nth, 2Nth, … message read (default 100, 0: never)",
    )
    parser.add_argument("--max-seconds", type=float, default=3600, help="stop after this long")
    parser.add_argument("--timeout", type=float, default=60, help="HTTP timeout per request")
    args = parser.parse_args()
    if args.users < 1 or args.senders < 1 or args.rooms < 0 or args.messages < 0:
        parser.error("--users and --senders must be >= 1, --rooms and --messages >= 0")
    if args.messages and not args.rooms:
        parser.error("--messages needs --rooms >= 1")

    client = Client(loopback_server(args.server), args.timeout)
    started = time.monotonic()
    deadline = started + args.max_seconds
    counts = Counts()
    users = [User(f"{args.prefix}-{i}") for i in range(args.users)]

    if args.secret_file:
        secret = read_secret(args.secret_file)
        jobs = [lambda u=u: register(client, secret, u, args.password, counts) for u in users]
        run_parallel(args.senders, jobs, "register", counts, deadline)
    jobs = [lambda u=u: login(client, u, args.password, counts) for u in users]
    run_parallel(args.senders, jobs, "login", counts, deadline)
    users = [u for u in users if u.token]
    if not users:
        raise SystemExit("no user could log in")

    # Room r is created by user r % N; user u joins room u % R.
    room_ids: list[str] = [""] * args.rooms
    members: list[list[User]] = [[] for _ in range(args.rooms)]

    def create(r: int) -> None:
        owner = users[r % len(users)]
        body = {"name": f"{args.prefix} room {r}", "preset": "public_chat"}
        reply = client.request("POST", "/_matrix/client/v3/createRoom", body, owner.token)
        room_ids[r] = reply["room_id"]
        members[r].append(owner)
        counts.add("rooms")

    run_parallel(args.senders, [lambda r=r: create(r) for r in range(args.rooms)],
                 "create rooms", counts, deadline)  # fmt: skip

    def join(user: User, r: int) -> None:
        path = f"/_matrix/client/v3/join/{quote(room_ids[r])}"
        client.request("POST", path, {}, user.token)
        members[r].append(user)
        counts.add("joins")

    jobs = [
        lambda u=u, r=i % args.rooms: join(u, r)
        for i, u in enumerate(users)
        if args.rooms and room_ids[i % args.rooms] and u not in members[i % args.rooms]
    ]
    run_parallel(args.senders, jobs, "join", counts, deadline)

    run_id = f"{int(time.time())}-{secrets.token_hex(4)}"
    live_rooms = [r for r in range(args.rooms) if room_ids[r]]

    def send(i: int) -> None:
        r = live_rooms[i % len(live_rooms)]
        sender = members[r][(i // len(live_rooms)) % len(members[r])]
        path = f"/_matrix/client/v3/rooms/{quote(room_ids[r])}" f"/send/m.room.message/{run_id}-{i}"
        body = {"msgtype": "m.text", "body": f"message {i} of run {run_id} from {sender.name}"}
        reply = client.request("PUT", path, body, sender.token)
        counts.add("messages")
        with counts.lock:
            sender.sent += 1
            due = args.receipt_every > 0 and sender.sent % args.receipt_every == 0
        if due and "event_id" in reply:
            receipt = (
                f"/_matrix/client/v3/rooms/{quote(room_ids[r])}"
                f"/receipt/m.read/{quote(reply['event_id'])}"
            )
            client.request("POST", receipt, {}, sender.token)
            counts.add("receipts")

    send_start = time.monotonic()
    if live_rooms:
        jobs = [lambda i=i: send(i) for i in range(args.messages)]
        run_parallel(args.senders, jobs, "send", counts, deadline)
    send_seconds = time.monotonic() - send_start

    result: dict = {
        "server": args.server,
        "users": len(users),
        "registered": counts.registered,
        "existing_users": counts.existing,
        "logins": counts.logins,
        "rooms_created": counts.rooms,
        "joins": counts.joins,
        "messages": counts.messages,
        "receipts": counts.receipts,
        "senders": args.senders,
        "errors": counts.errors,
        "send_seconds": round(send_seconds, 3),
        "messages_per_second": round(counts.messages / send_seconds, 1) if send_seconds else 0,
    }
    if args.sync_samples > 0:
        times = measure_sync(client, users[0], args.sync_samples)
        result["sync_user"] = users[0].user_id
        result["sync_ms_median"] = round(statistics.median(times), 1)
        result["sync_ms_min"] = round(min(times), 1)
        result["sync_ms_max"] = round(max(times), 1)
    result["elapsed_seconds"] = round(time.monotonic() - started, 3)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 3)
    result["room_ids"] = [room_ids[r] for r in live_rooms]
    print(json.dumps(result), flush=True)
    return 1 if counts.errors else 0


if __name__ == "__main__":
    sys.exit(main())

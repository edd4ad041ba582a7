"""Issue 12 in a throwaway Debian root: TLS to a remote server, and where the password goes.

- A remote server is reached with sslmode verify-full by default, its certificate checked
  against the CA file given as db-sslrootcert (a test CA made here with openssl), and Synapse
  connects over TLS; a certificate of another CA is refused with one clear line and nothing
  written; sslmode require still works.
- The role's password is in /etc/matrix-synapse/conf.d/database.pgpass (libpq's password
  file, 0600, Synapse's user) and nowhere else: not in the YAML, not in any output (also with
  DPKG_MAINTSCRIPT_DEBUG=1, also when a run fails), not in ucf's view of the differences,
  not in the logs; debconf's passwords.dat is emptied once the password is applied.
- An upgrade from 0.2.0 (built from git history; its snippet holds the password inline)
  moves the password to the password file without restarting Synapse.

The remote cluster lives in its own network namespace behind a veth pair, as in
test_scenarios.test_remote_server; it and the test CA's certificates come from
scripts/devtools/remote_tls.py, which test_dendrite.py shares.  Quick mode (conftest.py):
the smoke tests run on bookworm too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scripts.devtools import remote_tls, roots, steps
from scripts.devtools.harness import DEBS, HELPERS, Result, Root
from scripts.devtools.remote_tls import CA_CN, DB_ADDR, SERVER_CN, Certs, pg_version
from scripts.devtools.steps import PKG, SNIPPET

PROJECT = Path(__file__).resolve().parents[2]
SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
smoke = pytest.mark.smoke

PASSFILE = "/etc/matrix-synapse/conf.d/database.pgpass"
PASSWORDS_DAT = "/var/cache/debconf/passwords.dat"
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_IN_ROOT = "/etc/ssl/private-ca/test-ca.pem"
OTHER_CA_IN_ROOT = "/etc/ssl/private-ca/other-ca.pem"
REMOTE_PASSWORD = "remote 'tls' pw"
# The 0.2.0 release: the password inline in database.yaml.
RELEASE_0_2_0 = "7f0369c"


# --- the remote cluster (scripts/devtools/remote_tls.py) ---------------------------------


@pytest.fixture
def certs() -> Iterator[Certs]:
    """A test CA, a server certificate it signed for DB_ADDR, and an unrelated CA."""
    with remote_tls.make_certs() as made:
        yield made


def remote_cluster(root: Root, certs: Certs):
    """Replace the local cluster with one at DB_ADDR only (its own network namespace), TLS on
    with the test CA's server certificate; role synapse (REMOTE_PASSWORD) and database
    synapse made by its admin.  Returns psql(sql, db) as the remote superuser (socket)."""
    version = pg_version(root)
    root.ok(["pg_dropcluster", "--stop", version, "main"], what="removing the local cluster")
    psql = remote_tls.tls_cluster(root, certs, version)  # no local cluster left to ask
    remote_tls.make_role_and_database(psql, "synapse", REMOTE_PASSWORD)
    return psql


def check_synapse_over_tls(root: Root, psql) -> None:
    remote_tls.check_over_tls(root, psql, "synapse")


def with_synapse(root: Root, debs) -> None:
    steps.apt_install(root, debs["synapse"], what="laying Synapse out (stand-in package)")


# --- the snippet and the password file ------------------------------------------------------


def snippet_args(root: Root) -> dict:
    data = yaml.safe_load(root.read(SNIPPET)) or {}
    args = (data.get("database") or {}).get("args") or {}
    root.check(
        isinstance(args, dict) and bool(args),
        f"{SNIPPET} has database.args",
        "a mapping",
        repr(data),
    )
    return args


def check_passfile_form(root: Root) -> dict:
    """The snippet names the password file and holds no password."""
    args = snippet_args(root)
    root.check(
        "password" not in args and args.get("passfile") == PASSFILE,
        f"{SNIPPET} names the password file and holds no password",
        f"passfile: {PASSFILE}, no password key",
        repr(sorted(args)),
    )
    return args


def pgpass_fields(line: str) -> list[str]:
    """One line of libpq's password file, split on unescaped ':' (\\: and \\\\ escapes)."""
    fields, current, escaped = [], "", False
    for ch in line:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":" and len(fields) < 4:
            fields.append(current)
            current = ""
        else:
            current += ch
    return [*fields, current]


def passfile_password(root: Root, user: str = "synapse") -> str | None:
    """The password libpq would take from the password file for USER (first match)."""
    for line in root.read(PASSFILE).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = pgpass_fields(line)
        if len(fields) == 5 and fields[3] in (user, "*"):
            return fields[4]
    return None


def check_passfile(root: Root, password: str, owner: str) -> None:
    stat = root.ok(["stat", "-c", "%a %U %G", PASSFILE], what=f"looking at {PASSFILE}").output
    root.check(
        stat.split()[:2] == ["600", owner],
        f"{PASSFILE} is private to {owner}",
        f"mode 600, owner {owner}",
        stat.strip(),
    )
    found = passfile_password(root)
    root.check(
        found == password,
        f"{PASSFILE} holds the role's password (libpq's format, escapes undone)",
        "the expected password",
        "another password" if found else "no entry for role synapse",
    )


def check_nothing_written(root: Root, what: str) -> None:
    left = root.run(
        f"ls -d {SNIPPET}* {PASSFILE}* 2>/dev/null; "
        f"grep -F {SNIPPET} /var/lib/ucf/hashfile /var/lib/ucf/registry 2>/dev/null; true"
    ).output.strip()
    root.check(left == "", what, "no snippet, no password file, no ucf registration", left)


# --- looking for the password ------------------------------------------------------------------

SCAN_DIRS = ["/etc", "/var", "/root", "/tmp", "/run", "/home", "/srv"]
# Reads {"dirs": [...], "secrets": {label: text}} on stdin (never a command line); prints
# {path: [labels]} for every regular file holding one of the texts (never the texts).
SCAN = """
import json, os, sys
req = json.load(sys.stdin)
needles = {label: text.encode() for label, text in req["secrets"].items()}
found = {}
for top in req["dirs"]:
    for base, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(base, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            hits = sorted(label for label, text in needles.items() if text in data)
            if hits:
                found[path] = hits
print(json.dumps(found))
"""


def secret(label: str) -> tuple[str, str]:
    """(password, canary): a password around a unique alphanumeric canary; the password has
    ':' and '\\' (escaped in the password file), quotes and a space.  The scans look for
    the canary, which survives any quoting or escaping."""
    canary = f"{label}canary{secrets.token_hex(6)}"
    return f'{canary} it\'s a:b\\c "q"', canary


def scan_files(root: Root, canaries: dict[str, str]) -> dict[str, list[str]]:
    out = root.ok(
        ["python3", "-c", SCAN],
        input=json.dumps({"dirs": SCAN_DIRS, "secrets": canaries}),
        what="looking for the passwords in every file under " + " ".join(SCAN_DIRS),
    ).output
    return json.loads(out.strip().splitlines()[-1])


def only_in_passfile(root: Root, canaries: dict[str, str], current: str) -> None:
    """Once a password is applied: it is in the password file and nowhere else (debconf's
    passwords.dat emptied, no copy in a log or a backup); the earlier ones are nowhere."""
    found = scan_files(root, canaries)
    root.check(
        found == {PASSFILE: [current]},
        f"password {current!r} applied: in the password file only, and no other anywhere",
        repr({PASSFILE: [current]}),
        json.dumps(found, indent=1),
    )


def check_output_clean(root: Root, result: Result | str, canaries: dict[str, str], what: str):
    text = result.output if isinstance(result, Result) else result
    seen = sorted(label for label, canary in canaries.items() if canary in text)
    root.check(not seen, f"{what}: no password in the output", "none", f"passwords {seen}")


def run_logged(root: Root, outputs: list[tuple[str, str]], argv, *, what: str, ok=True, **kw):
    result = root.ok(argv, what=what, **kw) if ok else root.fails(argv, what=what, **kw)
    outputs.append((what, result.output))
    return result


# --- TLS -------------------------------------------------------------------------------


def install_ca(root: Root, src: Path, dest: str) -> None:
    root.put_file(src, dest, 0o644)


@smoke
@suites
def test_remote_tls_verify_full_by_default(make_root, debs, certs, suite):
    """A remote server, no sslmode preseeded: verify-full with the given CA file; Synapse
    connects over TLS; `verify` shows the certificate and what checked it."""
    root = make_root(suite, postgresql=True)
    psql = remote_cluster(root, certs)
    install_ca(root, certs.ca, CA_IN_ROOT)
    steps.preseed(root, db_host=DB_ADDR, db_password=REMOTE_PASSWORD, db_sslrootcert=CA_IN_ROOT)
    out = steps.apt_install(root, debs["current"], what="installing with a remote TLS server")
    root.check("Traceback" not in out.output, "no traceback", "none", out.tail(20))
    args = check_passfile_form(root)
    root.check(
        args.get("host") == DB_ADDR
        and args.get("sslmode") == "verify-full"
        and args.get("sslrootcert") == CA_IN_ROOT,
        "a remote server defaults to verify-full with the given CA file",
        f"host {DB_ADDR}, sslmode verify-full, sslrootcert {CA_IN_ROOT}",
        f"host {args.get('host')}, sslmode {args.get('sslmode')}, "
        f"sslrootcert {args.get('sslrootcert')}",
    )
    check_passfile(root, REMOTE_PASSWORD, "root")  # no Synapse user yet
    clusters = root.ok(["pg_lsclusters", "-h"], what="clusters").output
    root.check(
        clusters.split()[1:2] == ["remote"] and len(clusters.splitlines()) == 1,
        "nothing is provisioned locally",
        "only the remote cluster",
        clusters,
    )

    with_synapse(root, debs)  # our trigger gives Synapse's user the password file
    check_passfile(root, REMOTE_PASSWORD, "matrix-synapse")
    steps.synapse_chats(root)
    check_synapse_over_tls(root, psql)
    count = psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "synapse")
    root.check(int(count) > 100, "Synapse's tables are on the remote server", "> 100", count)

    verify = root.ok(["matrix-synapse-setup", "verify"], what="matrix-synapse-setup verify")
    line = next((x for x in verify.output.splitlines() if x.startswith("TLS:")), "")
    match = re.fullmatch(
        r"TLS: ok \((?P<version>TLSv1\.[23]), (?P<cipher>[^,]+), sslmode verify-full; "
        r"certificate CN=(?P<cn>.+?) issued by CN=(?P<issuer>.+?), valid until (?P<until>.+?), "
        r"verified with (?P<file>\S+), SHA-256 (?P<sha>[0-9a-f]{64})\)",
        line.strip(),
    )
    root.check(
        match is not None,
        "verify prints the TLS step (version, cipher, mode, certificate, CA file, digest)",
        "TLS: ok (TLSv1.x, cipher, sslmode verify-full; certificate CN=... issued by CN=..., "
        "valid until ..., verified with FILE, SHA-256 HEX)",
        verify.output,
    )
    assert match is not None
    seen = (match["cn"], match["issuer"], match["file"], match["sha"])
    wanted = (SERVER_CN, CA_CN, CA_IN_ROOT, certs.server_sha256())
    root.check(
        seen == wanted,
        "verify names the server's certificate, its issuer, the CA file and the digest",
        repr(wanted),
        repr(seen),
    )
    steps.synapse_recheck(root)


@suites
def test_remote_tls_other_ca_is_refused(make_root, debs, certs, suite):
    """The server's certificate is signed by a CA the root does not trust (another CA
    file, then the system bundle): the install fails with the TLS message, one line, and
    writes nothing."""
    root = make_root(suite, postgresql=True)
    remote_cluster(root, certs)
    install_ca(root, certs.other_ca, OTHER_CA_IN_ROOT)
    tls_line = re.compile(
        r"^matrix-synapse-setup: error: The TLS connection to PostgreSQL at "
        + re.escape(f"{DB_ADDR}:5432")
        + r" failed with sslmode 'verify-full' \(.+\): .*signed by a CA in (?P<file>\S+) "
        r"and name '" + re.escape(DB_ADDR) + r"'; give its CA file as the root certificate\.$",
        re.M,
    )
    for rootcert, expected in ((OTHER_CA_IN_ROOT, OTHER_CA_IN_ROOT), ("", SYSTEM_BUNDLE)):
        steps.preseed(root, db_host=DB_ADDR, db_password=REMOTE_PASSWORD, db_sslrootcert=rootcert)
        if root.exists(f"/usr/share/{PKG}/maintscript-helper"):
            out = root.fails(
                ["dpkg", "--configure", "-a"],
                what="configuring again with the system's CAs only",
                env=steps.NONINTERACTIVE,
            )
        else:
            out = steps.apt_install(
                root, debs["current"], ok=False, what="install trusting another CA"
            )
        text = out.output.replace("\r\n", "\n")  # the helper's lines may end in \r\n here
        root.check(
            "Traceback" not in text, "a message, not a traceback", "no traceback", out.tail(25)
        )
        lines = tls_line.findall(text)
        match = tls_line.search(text)
        root.check(
            match is not None and match["file"] == expected,
            f"the refusal is one line naming the mode, the server and {expected}",
            f"matrix-synapse-setup: error: The TLS connection to PostgreSQL at {DB_ADDR}:5432 "
            f"failed with sslmode 'verify-full' (...) ... {expected} ...",
            out.tail(25),
        )
        root.check(
            len(lines) == 1,
            "the refusal is said once",
            "once",
            f"{len(lines)} times",
        )
        check_nothing_written(root, f"a refused certificate ({expected}) writes nothing")
        status = root.ok(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", PKG], what="package status"
        ).output.strip()
        root.check(status in ("iF", "iU"), "the package is left unconfigured", "iF or iU", status)


@suites
def test_remote_tls_require_still_works(make_root, debs, certs, suite):
    """sslmode require (no CA): encrypted without checking the certificate; Synapse works."""
    root = make_root(suite, postgresql=True)
    psql = remote_cluster(root, certs)
    steps.preseed(root, db_host=DB_ADDR, db_password=REMOTE_PASSWORD, db_sslmode="require")
    steps.apt_install(root, debs["current"], what="installing with sslmode require")
    args = check_passfile_form(root)
    root.check(
        args.get("sslmode") == "require" and "sslrootcert" not in args,
        "the snippet says require, with no root certificate",
        "sslmode require, no sslrootcert",
        f"sslmode {args.get('sslmode')}, sslrootcert {args.get('sslrootcert')}",
    )
    with_synapse(root, debs)
    check_passfile(root, REMOTE_PASSWORD, "matrix-synapse")
    steps.synapse_chats(root)
    check_synapse_over_tls(root, psql)
    verify = root.ok(["matrix-synapse-setup", "verify"], what="matrix-synapse-setup verify")
    root.check(
        re.search(
            r"^TLS: ok \(TLSv1\.[23], [^,]+, sslmode require; certificate SHA-256 "
            + certs.server_sha256()
            + r" \(not checked: sslmode require\)\)$",
            verify.output,
            re.M,
        )
        is not None,
        "verify says the certificate was not checked under require",
        "TLS: ok (..., sslmode require; certificate SHA-256 <the server's> (not checked: ...))",
        verify.output,
    )


# --- the password: only in the password file ---------------------------------------------


def ucf_answers(password: str) -> list[dict]:
    """dpkg-reconfigure on a pty (readline): every question, host back to localhost, a new
    password; then ucf's question about the edited snippet: first "show the differences",
    then "install the package maintainer's version"."""
    prompt = r"What do you want to do about modified configuration file database\.yaml\?"
    return [
        {"expect": r"Host name of the PostgreSQL server for Synapse:", "send": "localhost"},
        {"expect": r"Port of the PostgreSQL server:", "send": "5432"},
        {"expect": r"Name of Synapse's database:", "send": "synapse"},
        {"expect": r"PostgreSQL role \(user name\) for Synapse:", "send": "synapse"},
        {"expect": r"Password of the PostgreSQL role for Synapse:", "send": password},
        {"expect": r"Password confirmation:", "send": password},
        {"expect": r"Tune the local PostgreSQL cluster for Synapse\?", "send": "yes"},
        {"expect": r"Name of the first server admin account \(empty for none\):", "send": ""},
        {"expect": r"Delete Synapse's database when this package is purged\?", "send": "no"},
        {"expect": r"Number of database dumps to keep:", "send": "3"},
        {"expect": r"Synapse worker processes:", "send": "1"},  # the first choice: none
        {"expect": prompt, "send": "show the differences"},
        {"expect": r"differences between versions", "send": None},
        {"expect": prompt, "send": "install the package"},
    ]


@suites
def test_no_password_in_any_output_or_yaml(make_root, debs, suite):
    """Five passwords in turn (preseeded install with dpkg's script debugging, Synapse's
    arrival, a preseeded reconfigure with DPKG_MAINTSCRIPT_DEBUG=1, `verify`, `provision
    --password-file`, failing runs with the server down, a reconfigure that finally applies
    the failed password, then a typed one through ucf's question about a hand-edited
    snippet, whose differences are shown): no output, log, ucf file or YAML holds any of
    them; the password file holds the current one (0600, Synapse's user); debconf's
    passwords.dat holds none once applied."""
    root = make_root(suite, postgresql=True)
    version = pg_version(root)
    pws, canaries = {}, {}
    for label in ("one", "two", "three", "four", "five"):
        pws[label], canaries[label] = secret(label)
    pws["five"] = f"{canaries['five']} typed a:b"  # typed on a pty: no quotes, no backslash
    debug = {"DPKG_MAINTSCRIPT_DEBUG": "1", **steps.NONINTERACTIVE}
    outputs: list[tuple[str, str]] = []

    # 1. A preseeded install, dpkg debugging its maintainer scripts, then Synapse arrives.
    steps.preseed(root, db_password=pws["one"])
    cmd = ["apt-get", "-o", "Dpkg::Options::=--debug=2", "install", "-y", "-q"]
    out = run_logged(
        root,
        outputs,
        [*cmd, f"{DEBS}/{debs['current'].name}"],
        what="install (dpkg --debug=2: DPKG_MAINTSCRIPT_DEBUG=1 in the scripts)",
        env=steps.NONINTERACTIVE,
    )
    root.check(
        "D000002: " in out.output,
        "dpkg debugs its maintainer scripts (dbg_scripts: DPKG_MAINTSCRIPT_DEBUG=1)",
        "D000002 lines",
        out.tail(20),
    )
    check_passfile_form(root)
    check_passfile(root, pws["one"], "root")
    outputs.append(
        (
            "Synapse's arrival",
            steps.apt_install(root, debs["synapse"], what="installing Synapse").output,
        )
    )
    check_passfile(root, pws["one"], "matrix-synapse")
    steps.synapse_chats(root)
    only_in_passfile(root, canaries, "one")

    # 2. A new password, preseeded, applied by dpkg-reconfigure with debugging on.
    steps.preseed(root, db_password=pws["two"])
    run_logged(
        root,
        outputs,
        ["dpkg-reconfigure", "-fnoninteractive", PKG],
        what="dpkg-reconfigure with a new password, DPKG_MAINTSCRIPT_DEBUG=1",
        env=debug,
    )
    check_passfile(root, pws["two"], "matrix-synapse")
    steps.synapse_recheck(root)
    only_in_passfile(root, canaries, "two")

    # 3. The admin command: verify, and provision with a password file (another password,
    # then the one before back): the password file follows the role.
    run_logged(root, outputs, ["matrix-synapse-setup", "verify"], what="verify (debug)", env=debug)
    for label in ("three", "two"):
        root.write("/root/pw", pws[label] + "\n", 0o600)
        run_logged(
            root,
            outputs,
            ["matrix-synapse-setup", "provision", "--password-file", "/root/pw"],
            what=f"provision --password-file (password {label}, debug)",
            env=debug,
        )
        # The role's new password: the password file follows (matrix-synapse-setup(8)).
        check_passfile(root, pws[label], "matrix-synapse")
    root.ok(["rm", "-f", "/root/pw"], what="removing the test's own password file")
    only_in_passfile(root, canaries, "two")
    steps.synapse_recheck(root)

    # 4. Failing runs: the server is down.
    root.ok(["pg_ctlcluster", version, "main", "stop"], what="stopping the cluster")
    run_logged(
        root,
        outputs,
        ["matrix-synapse-setup", "verify"],
        what="verify with the server down (debug)",
        env=debug,
        ok=False,
    )
    root.write("/root/pw", pws["four"] + "\n", 0o600)
    run_logged(
        root,
        outputs,
        ["matrix-synapse-setup", "provision", "--password-file", "/root/pw"],
        what="provision with the server down (debug)",
        env=debug,
        ok=False,
    )
    root.ok(["rm", "-f", "/root/pw"], what="removing the test's own password file")
    steps.preseed(root, db_password=pws["four"])
    run_logged(
        root,
        outputs,
        ["dpkg-reconfigure", "-fnoninteractive", PKG],
        what="dpkg-reconfigure with a new password, the server down (debug)",
        env=debug,
        ok=False,
    )
    check_passfile(root, pws["two"], "matrix-synapse")  # nothing applied
    # Not applied: kept in debconf's passwords.dat (root only) for the next run, and there
    # only (this also shows that the scan reads debconf's files).
    found = scan_files(root, canaries)
    kept = {path: labels for path, labels in found.items() if path != PASSFILE}
    root.check(
        found.get(PASSFILE) == ["two"]
        and set(kept) <= {PASSWORDS_DAT, PASSWORDS_DAT + "-old"}
        and kept.get(PASSWORDS_DAT) == ["four"],
        "a password not applied stays in debconf's passwords.dat only",
        f"{PASSFILE}: ['two'], {PASSWORDS_DAT}: ['four'], nothing else",
        json.dumps(found, indent=1),
    )
    root.ok(["pg_ctlcluster", version, "main", "start"], what="starting the cluster")
    run_logged(
        root,
        outputs,
        ["dpkg-reconfigure", "-fnoninteractive", PKG],
        what="dpkg-reconfigure once the server is back: the kept password is applied",
        env=debug,
    )
    check_passfile(root, pws["four"], "matrix-synapse")
    steps.synapse_recheck(root)
    only_in_passfile(root, canaries, "four")

    # 5. The admin edits the snippet (a comment, another spelling of the host); a typed new
    # password and the host back to localhost: ucf asks, we look at the differences.
    text = root.read(SNIPPET)
    edited = text.replace('host: "localhost"', 'host: "127.0.0.1"')
    root.check(edited != text, 'the snippet has host: "localhost"', "present", text)
    mode = root.ok(["stat", "-c", "%a", SNIPPET], what="snippet mode").output.strip()
    root.write(SNIPPET, "# edited by the admin\n" + edited, int(mode, 8))
    root.ok(["chgrp", "matrix-synapse", SNIPPET], what="the snippet's group back")
    plan = {"timeout": 120, "steps": ucf_answers(pws["five"])}
    typed = root.ok(
        ["python3", f"{HELPERS}/ptydrive.py", "dpkg-reconfigure", PKG],
        input=json.dumps(plan),
        env={"TERM": "xterm", "DEBIAN_FRONTEND": "readline", "DPKG_MAINTSCRIPT_DEBUG": "1"},
        what="dpkg-reconfigure on a pty: ucf's question, its differences, the new file",
        timeout=600,
    )
    outputs.append(("dpkg-reconfigure through ucf's question", typed.output))
    # ucf's view: from its note's title to its question, asked again.
    # (trixie's ucf shows the diff with no-break spaces.)
    shown = typed.output.replace("\xa0", " ").replace("\r\n", "\n")
    shown = shown.split("differences between versions", 1)[-1]
    shown = shown.split("What do you want to do about modified", 1)[0]
    root.check(
        'host: "127.0.0.1"' in shown and "# edited by the admin" in shown,
        "ucf shows the differences of the edited snippet",
        'a diff with the admin\'s comment and host: "127.0.0.1"',
        shown[:3000],
    )
    check_output_clean(root, shown, canaries, "ucf's view of the differences")
    args = check_passfile_form(root)
    root.check(args.get("host") == "localhost", "the maintainer's version", "localhost", str(args))
    check_passfile(root, pws["five"], "matrix-synapse")
    steps.synapse_recheck(root)

    # Every output, then every file.
    for what, text in outputs:
        check_output_clean(root, text, canaries, what)
    only_in_passfile(root, canaries, "five")
    passwords = root.run(["grep", "-c", f"^Name: {PKG}/db-password", PASSWORDS_DAT]).output
    root.check(
        passwords.strip() not in ("", "0"),
        "debconf's passwords.dat has our password questions (emptied, not gone)",
        "our questions present",
        passwords,
    )


# --- upgrade from 0.2.0 ------------------------------------------------------------------


@pytest.fixture(scope="session")
def release_0_2_0() -> Path:
    """The 0.2.0 .deb built from git history; cached in build/cache by its commit id."""

    def resolve() -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(PROJECT), "rev-parse", "--verify", f"{RELEASE_0_2_0}^{{commit}}"],
            capture_output=True,
            text=True,
            check=False,
        )

    found = resolve()
    if found.returncode:
        # A shallow clone (some CI checkouts) lacks the release: deepen it from origin.
        subprocess.run(
            ["git", "-C", str(PROJECT), "fetch", "--quiet", "--unshallow"],
            capture_output=True,
            check=False,
        )
        found = resolve()
    if found.returncode:
        raise AssertionError(
            f"commit {RELEASE_0_2_0} (release 0.2.0) is not in this clone's history: "
            "the upgrade scenario builds it; clone without --depth"
        )
    commit = found.stdout.strip()
    cache = roots.CACHE / f"system-release-{commit[:16]}"
    built = sorted(cache.glob(f"{PKG}_*_all.deb"))
    if built:
        return built[0]
    with tempfile.TemporaryDirectory(prefix="mss-release-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(PROJECT), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        proc = subprocess.run(
            ["dpkg-buildpackage", "--build=all", "--no-sign"],
            cwd=src,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(Path(tmp).glob(f"{PKG}_*_all.deb"))
        if proc.returncode or len(debs) != 1:
            raise AssertionError(
                f"building {RELEASE_0_2_0} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f".{debs[0].name}.{os.getpid()}.tmp"
        shutil.move(debs[0], partial)
        dest = cache / debs[0].name
        os.replace(partial, dest)  # other sessions may build it at the same time
        return dest


def deb_version(path: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(path), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()


@smoke
@suites
def test_upgrade_from_0_2_0_moves_the_password_without_restarting_synapse(
    make_root, debs, release_0_2_0, suite
):
    """0.2.0 with the password inline in database.yaml, Synapse running on it; the upgrade
    moves the password to the password file, leaves no copy of it elsewhere, and does not
    restart Synapse (the same connection); restarted later, Synapse logs in with the file."""
    root = make_root(suite, postgresql=True)
    old_version = deb_version(release_0_2_0)
    root.check(old_version == "0.2.0", "the release build is 0.2.0", "0.2.0", old_version)
    old_path = f"{DEBS}/release/{release_0_2_0.name}"
    root.put_file(release_0_2_0, old_path)
    password, canary = secret("upgrade")
    steps.preseed(root, db_password=password)
    steps.apt_install(root, old_path, what="installing 0.2.0")
    old_args = snippet_args(root)
    root.check(
        old_args.get("password") == password and "passfile" not in old_args,
        "0.2.0 writes the password inline in the YAML",
        "password: <the password>, no passfile",
        repr(sorted(old_args)),
    )
    with_synapse(root, debs)
    steps.synapse_chats(root)
    pid = steps.synapse_pid(root)
    root.check(pid not in ("", "0"), "Synapse runs", "a pid", repr(pid))

    new_version = deb_version(debs["current"])
    cmd = ["apt-get", "install", "-y", "-q"]
    if new_version == old_version:  # the tree still says 0.2.0: reinstalling is the upgrade
        cmd.append("--reinstall")
    out = root.ok(
        [*cmd, f"{DEBS}/{debs['current'].name}"],
        what=f"upgrading {old_version} -> {new_version}",
        env=steps.NONINTERACTIVE,
    )
    check_output_clean(root, out, {"upgrade": canary}, "the upgrade")
    root.check("Traceback" not in out.output, "no traceback", "none", out.tail(20))
    status = root.ok(
        ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", PKG], what="status"
    ).output.split()
    root.check(status == [new_version, "ii"], "upgraded and configured", new_version, str(status))
    root.check(
        steps.synapse_pid(root) == pid,
        "the upgrade does not restart Synapse (the same connection in another form)",
        f"pid {pid}",
        steps.synapse_pid(root),
    )
    check_passfile(root, password, "matrix-synapse")
    found = scan_files(root, {"upgrade": canary})
    root.check(
        list(found) == [PASSFILE],
        "after the upgrade the password is in the password file only (not in the YAML, "
        "not in ucf's cache or backups, not in debconf)",
        f"[{PASSFILE!r}]",
        repr(sorted(found)),
    )
    check_passfile_form(root)
    md5 = root.ok(["md5sum", SNIPPET], what="md5 of the snippet").output.split()[0]
    recorded = root.run(["grep", "-F", f"  {SNIPPET}", "/var/lib/ucf/hashfile"]).output.split()
    root.check(
        recorded[:1] == [md5],
        "ucf records the rewritten snippet (a later run does not take it for a hand edit)",
        md5,
        repr(recorded),
    )
    steps.synapse_recheck(root)

    root.ok(["invoke-rc.d", "matrix-synapse", "restart"], what="restarting Synapse")
    new_pid = steps.synapse_pid(root)
    root.check(new_pid not in ("", "0", pid), "Synapse restarted", f"not {pid}", new_pid)
    steps.synapse_recheck(root)
    logins = steps.psql(
        root,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'synapse' AND backend_type = "
        "'client backend'",
        what="Synapse's connections",
    )
    root.check(
        int(logins) > 0,
        "the restarted Synapse is logged in to PostgreSQL (with the password file)",
        "> 0 connections",
        logins,
    )

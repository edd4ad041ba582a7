"""A client installs the package from the signed apt repository, as docs/publishing.md
says, in a throwaway Debian root; a tampered mirror is refused; the published
source package rebuilds the published .deb, byte for byte, in a clean build root.

The repository is made by scripts/repo.py (what `invoke repo` runs) with a GnuPG key made
for the test, copied into the root and served over HTTP on the root's own loopback (its
network namespace has nothing else), like a mirror.  The client side is plain apt:
the key in /etc/apt/keyrings, a deb822 source with Signed-By, `apt-get update`, `apt-get
install matrix-synapse-setup`.
"""

from __future__ import annotations

import gzip
import lzma
import os
import subprocess
from pathlib import Path

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import Root

PROJECT = Path(__file__).resolve().parents[2]
SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
MIRROR = "/srv/mirror"
PORT = 8080
KEYRING = "/etc/apt/keyrings/matrix-synapse-setup.gpg"
SOURCE = "/etc/apt/sources.list.d/matrix-synapse-setup.sources"
# Refresh only our source (the root's Debian lists stay as cached: there is no network).
UPDATE = [
    "apt-get",
    "update",
    "-o",
    "Dir::Etc::SourceList=/dev/null",
    "-o",
    "APT::Get::List-Cleanup=false",
]


def gpg(home: Path, *args: str, **kwargs) -> bytes:
    return subprocess.run(
        ["gpg", "--batch", "--yes", "--quiet", *args],
        check=True,
        capture_output=True,
        env={**os.environ, "GNUPGHOME": str(home)},
        **kwargs,
    ).stdout


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory):
    """The publisher's secret key file, and someone else's public keyring."""
    top = tmp_path_factory.mktemp("publish-keys")
    out = {}
    for who in ("publisher", "stranger"):
        home = top / who
        home.mkdir(mode=0o700)
        uid = f"{who} <{who}@example.invalid>"
        gpg(
            home,
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            uid,
            "ed25519",
            "sign",
            "1d",
        )
        out[f"{who}-secret"] = top / f"{who}.asc"
        out[f"{who}-secret"].write_bytes(gpg(home, "--armor", "--export-secret-keys", uid))
        out[f"{who}-public"] = top / f"{who}.gpg"
        out[f"{who}-public"].write_bytes(gpg(home, "--export", uid))
        subprocess.run(
            ["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
        )
    return out


def publish(outdir: Path, deb: Path, key_file: Path) -> Path:
    """What `invoke repo` publishes: the .deb and its source package (the .dsc beside it)."""
    dsc = deb.with_name(deb.name.removesuffix("_all.deb") + ".dsc")
    assert dsc.exists(), f"`invoke build` made no {dsc.name}"
    result = subprocess.run(
        [
            "/usr/bin/python3",
            str(PROJECT / "scripts" / "repo.py"),
            str(outdir),
            str(deb),
            str(dsc),
            "--suite",
            "stable",
            "--key-file",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return outdir


def serve(root: Root, repo: Path) -> None:
    """Copy the repository into the root and serve it on the root's loopback."""
    for path in sorted(p for p in repo.rglob("*") if p.is_file()):
        root.put_file(path, f"{MIRROR}/{path.relative_to(repo)}")
    root.ok(
        f"setsid python3 -m http.server --bind 127.0.0.1 --directory {MIRROR} {PORT} "
        f">/var/log/mirror.log 2>&1 </dev/null &\n"
        f"for i in $(seq 50); do python3 -c 'import socket; "
        f'socket.create_connection(("127.0.0.1", {PORT}))\' 2>/dev/null && exit 0; '
        f"sleep 0.1; done; exit 1",
        what="serving the repository on 127.0.0.1",
    )


def add_source(root: Root, keyring: str = KEYRING) -> None:
    """The client's side, as docs/publishing.md says: the key fetched from the mirror,
    then Signed-By."""
    root.ok(["install", "-d", "-m", "0755", "/etc/apt/keyrings"], what="creating keyrings")
    root.ok(
        [
            "/usr/lib/apt/apt-helper",
            "download-file",
            f"http://127.0.0.1:{PORT}/archive-keyring.gpg",
            keyring,
        ],
        what="downloading the archive key",
    )
    root.write(
        SOURCE,
        f"Types: deb\nURIs: http://127.0.0.1:{PORT}/\nSuites: stable\n"
        f"Components: main\nSigned-By: {keyring}\n",
    )


@pytest.mark.smoke
@suites
def test_install_from_signed_repository(make_root, debs, signing_keys, suite, tmp_path):
    root = make_root(suite)
    serve(root, publish(tmp_path / "repo", debs["current"], signing_keys["publisher-secret"]))
    add_source(root)
    update = root.ok(UPDATE, what="apt-get update from the signed repository")
    root.check(
        "W:" not in update.output and "E:" not in update.output,
        "apt-get update has no warnings or errors",
        "none",
        update.output[-1500:],
    )
    policy = root.ok(["apt-cache", "policy", steps.PKG], what="apt-cache policy").output
    version = debs["current"].name.split("_")[1]
    root.check(
        f"Candidate: {version}" in policy and f"127.0.0.1:{PORT} stable/main" in policy,
        "the candidate comes from the repository",
        f"{version} from stable/main",
        policy,
    )

    steps.install_postgresql(root)
    root.ok(
        ["apt-get", "install", "-y", "-q", steps.PKG],
        what="apt-get install matrix-synapse-setup",
        env=steps.NONINTERACTIVE,
    )
    status = root.ok(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", steps.PKG], what="dpkg status"
    ).output
    root.check(status == f"ii {version}", "installed and configured", f"ii {version}", status)
    facts = steps.database_facts(root)
    expected = {"encoding": "UTF8", "collate": "C", "ctype": "C", "owner": "synapse"}
    root.check(facts == expected, "database synapse as Synapse needs it", str(expected), str(facts))
    steps.check_snippet(root, password=None, group="root")
    same = root.ok(
        [
            "cmp",
            f"/var/cache/apt/archives/{steps.PKG}_{version}_all.deb",
            f"{MIRROR}/pool/main/m/{steps.PKG}/{debs['current'].name}",
        ],
        what="the installed .deb is the published one",
    )
    assert same.code == 0


def tamper_packages(repo: Path) -> None:
    """What an attacker on the mirror would do: every form of the index, consistently."""
    bindir = repo / "dists" / "stable" / "main" / "binary-all"
    text = (bindir / "Packages").read_text()
    evil = text.replace("Description: configure", "Description: CONFIGURE")
    assert evil != text
    (bindir / "Packages").write_text(evil)
    (bindir / "Packages.gz").write_bytes(gzip.compress(evil.encode()))
    (bindir / "Packages.xz").write_bytes(lzma.compress(evil.encode()))


@suites
def test_tampered_or_foreign_repository_is_refused(make_root, debs, signing_keys, suite, tmp_path):
    root = make_root(suite)
    repo = publish(tmp_path / "repo", debs["current"], signing_keys["publisher-secret"])
    tamper_packages(repo)
    serve(root, repo)
    add_source(root)
    update = root.fails(UPDATE, what="apt-get update from a mirror with a tampered Packages")
    # apt compares the size first, then the hashes the signed Release lists (the
    # recompressed index may or may not keep its size).
    root.check(
        "Hash Sum mismatch" in update.output or "File has unexpected size" in update.output,
        "apt refuses the index that does not match the signed Release",
        "Hash Sum mismatch or File has unexpected size",
        update.output[-1500:],
    )
    refused = root.fails(
        ["apt-get", "install", "-y", "-q", steps.PKG],
        what="installing from the tampered mirror",
        env=steps.NONINTERACTIVE,
    )
    root.check(
        "Unable to locate package" in refused.output,
        "nothing to install from it",
        "Unable to locate package",
        refused.output[-1500:],
    )

    # The genuine index, but the client trusts another key: the signature is refused.
    root.ok(f"rm -rf {MIRROR}", what="removing the tampered mirror")
    clean = publish(tmp_path / "clean", debs["current"], signing_keys["publisher-secret"])
    for path in sorted(p for p in clean.rglob("*") if p.is_file()):
        root.put_file(path, f"{MIRROR}/{path.relative_to(clean)}")
    root.put_file(signing_keys["stranger-public"], KEYRING)
    foreign = root.fails(UPDATE, what="apt-get update with a keyring that did not sign")
    root.check(
        "NO_PUBKEY" in foreign.output or "not signed" in foreign.output,
        "apt refuses the signature",
        "NO_PUBKEY",
        foreign.output[-1500:],
    )
    root.fails(["dpkg-query", "-W", steps.PKG], what="the package is not installed")


# Smoke: on both releases in quick mode too (bookworm is the one that compares bytes).
@pytest.mark.smoke
@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_published_source_rebuilds_the_published_deb_in_a_clean_root(
    debs, signing_keys, suite, tmp_path
):
    """`apt-get source` from the signed repository, then `dpkg-buildpackage -b` as an
    unprivileged user in a root that has only build-essential and the Build-Depends
    (scripts/clean_build.py), offline: the unit tests run and pass, and on bookworm (the
    release `invoke build` runs on, as the .buildinfo records) the .deb is the published
    one, byte for byte."""
    repo = publish(tmp_path / "repo", debs["current"], signing_keys["publisher-secret"])
    published = repo / "pool" / "main" / "m" / steps.PKG / debs["current"].name
    out = tmp_path / "out"
    args = [str(repo), "--suite", suite, "--keyring", str(repo / "archive-keyring.gpg")]
    args += ["--output-dir", str(out)]
    if suite == "bookworm":
        args += ["--compare", str(published)]
    result = subprocess.run(
        ["/usr/bin/python3", str(PROJECT / "scripts" / "clean_build.py"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    # The source came from the repository (signed), and the unit tests ran at build time.
    assert f"Get:1 http://127.0.0.1:8080 stable/main {steps.PKG}" in output, output[-6000:]
    assert "dpkg-source: info: extracting" in output
    summary = [line for line in output.splitlines() if " passed" in line and "====" in line]
    assert summary and " failed" not in summary[-1], output[-6000:]
    rebuilt = out / debs["current"].name
    if suite == "bookworm":
        assert rebuilt.read_bytes() == published.read_bytes()
        assert "identical to" in output
    else:
        assert rebuilt.is_file()

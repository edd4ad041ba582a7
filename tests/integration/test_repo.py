"""scripts/repo.py: a signed apt repository that real apt accepts, and refuses when tampered.

The packages are real .debs made with dpkg-deb, the keys real GnuPG keys in a
throwaway GNUPGHOME, and the client is the host's apt-get with a private
configuration (its own sources, lists and cache in a temporary directory), so
nothing of the host's apt state is read or changed.  The repository is read
over file://; the system tests install from it over loopback HTTP.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from debian.deb822 import Dsc, Packages, Release, Sources

ROOT = Path(__file__).resolve().parents[2]
REPO_PY = ROOT / "scripts" / "repo.py"
PYTHON = "/usr/bin/python3"


def gpg(home: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--batch", "--yes", "--quiet", *args],
        env={**os.environ, "GNUPGHOME": str(home)},
        check=True,
        capture_output=True,
        **kwargs,
    )


def new_key(home: Path, uid: str, passphrase: str = "") -> str:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(
        home,
        "--pinentry-mode",
        "loopback",
        "--passphrase-fd",
        "0",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        "1d",
        input=passphrase.encode(),
    )
    out = gpg(home, "--with-colons", "--list-secret-keys", uid).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A signing key (as a secret key file), and an unrelated key."""
    top = tmp_path_factory.mktemp("keys")
    signer, other = top / "signer", top / "other"
    fpr = new_key(signer, "Repo Signer <signer@example.invalid>")
    (top / "signer.asc").write_bytes(gpg(signer, "--armor", "--export-secret-keys", fpr).stdout)
    other_fpr = new_key(other, "Someone Else <other@example.invalid>")
    (top / "other.gpg").write_bytes(gpg(other, "--export", other_fpr).stdout)
    yield {"fpr": fpr, "home": signer, "file": top / "signer.asc", "other": top / "other.gpg"}
    for home in (signer, other):
        subprocess.run(
            ["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
        )


def make_deb(where: Path, version: str, name: str = "mss-repo-probe", payload: str = "") -> Path:
    tree = where / f"{name}-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    doc = tree / "usr" / "share" / "doc" / name
    doc.mkdir(parents=True)
    (doc / "README").write_text(f"{name} {version}\n{payload}")
    (tree / "DEBIAN" / "control").write_text(
        textwrap.dedent(f"""\
        Package: {name}
        Version: {version}
        Architecture: all
        Maintainer: Test <test@example.invalid>
        Description: probe package for the repository tests
    """)
    )
    deb = where / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def publish(outdir: Path, *args, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [PYTHON, str(REPO_PY), str(outdir), "--suite", "stable", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


class Apt:
    """apt-get with private state, reading only the one source given."""

    def __init__(self, top: Path, source: str):
        self.top = top
        etc = top / "etc"
        for sub in ("apt.conf.d", "preferences.d", "trusted.gpg.d", "sources.list.d"):
            (etc / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("state/lists/partial", "cache/archives/partial", "download"):
            (top / sub).mkdir(parents=True, exist_ok=True)
        (etc / "sources.list.d" / "probe.sources").write_text(source)
        self.conf = top / "apt.conf"
        self.conf.write_text(
            textwrap.dedent(f"""\
            Dir::Etc "{etc}";
            Dir::Etc::sourcelist "/dev/null";
            Dir::Etc::trusted "{etc}/trusted.gpg";
            Dir::State "{top}/state";
            Dir::State::status "/dev/null";
            Dir::Cache "{top}/cache";
            APT::Sandbox::User "root";
        """)
        )

    def run(self, *args: str, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["apt-get", "-q", *args],
            env={**os.environ, "APT_CONFIG": str(self.conf), "LC_ALL": "C"},
            capture_output=True,
            text=True,
            cwd=cwd,
            check=False,
        )

    def policy(self, name: str) -> str:
        return subprocess.run(
            ["apt-cache", "policy", name],
            env={**os.environ, "APT_CONFIG": str(self.conf), "LC_ALL": "C"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def client(tmp: Path, repo: Path, keyring: Path | None, types: str = "deb") -> Apt:
    signed = f"Signed-By: {keyring}\n" if keyring else ""
    return Apt(
        tmp / "client",
        f"Types: {types}\nURIs: file://{repo}\nSuites: stable\n" f"Components: main\n{signed}",
    )


def make_source(where: Path, version: str, payload: str = "") -> Path:
    """A real native source package made by dpkg-source; returns its .dsc."""
    name = "mss-repo-probe"
    tree = where / name
    (tree / "debian" / "source").mkdir(parents=True)
    (tree / "debian" / "source" / "format").write_text("3.0 (native)\n")
    (tree / "debian" / "changelog").write_text(
        f"{name} ({version}) unstable; urgency=medium\n\n  * Probe.\n\n"
        " -- Test <test@example.invalid>  Mon, 30 Nov 2026 12:00:00 +0000\n"
    )
    (tree / "debian" / "control").write_text(
        f"Source: {name}\nMaintainer: Test <test@example.invalid>\n\n"
        f"Package: {name}\nArchitecture: all\nDescription: probe package\n probe\n"
    )
    (tree / "debian" / "rules").write_text("#!/usr/bin/make -f\n%:\n\tdh $@\n")
    (tree / "README").write_text(f"{name} {version}\n{payload}")
    subprocess.run(["dpkg-source", "-b", name], cwd=where, check=True, capture_output=True)
    shutil.rmtree(tree)
    return where / f"{name}_{version}.dsc"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_signed_repository_has_the_layout_and_hashes_and_apt_installs_from_it(tmp_path, keys):
    deb = make_deb(tmp_path, "1.0")
    repo = tmp_path / "repo"
    result = publish(repo, "--key-file", keys["file"], deb)
    assert f"signed by {keys['fpr']}" in result.stdout

    dist = repo / "dists" / "stable"
    for name in (
        "Release",
        "InRelease",
        "Release.gpg",
        "main/binary-all/Packages",
        "main/binary-all/Packages.gz",
        "main/binary-all/Packages.xz",
    ):
        assert (dist / name).is_file(), name
    pooled = repo / "pool/main/m/mss-repo-probe/mss-repo-probe_1.0_all.deb"
    assert pooled.read_bytes() == deb.read_bytes()

    # Read it back independently of the script: Release -> indices -> .deb.
    with open(dist / "Release", "rb") as fh:
        release = Release(fh)
    assert release["Suite"] == "stable" and release["Architectures"] == "all"
    listed = {entry["name"]: entry for entry in release["SHA256"]}
    for name in (
        "main/binary-all/Packages",
        "main/binary-all/Packages.gz",
        "main/binary-all/Packages.xz",
    ):
        assert int(listed[name]["size"]) == (dist / name).stat().st_size
        assert listed[name]["sha256"] == sha256(dist / name)
    plain = (dist / "main/binary-all/Packages").read_bytes()
    assert gzip.decompress((dist / "main/binary-all/Packages.gz").read_bytes()) == plain
    assert lzma.decompress((dist / "main/binary-all/Packages.xz").read_bytes()) == plain
    (stanza,) = list(Packages.iter_paragraphs(plain.decode(), use_apt_pkg=False))
    assert stanza["Filename"] == str(pooled.relative_to(repo))
    assert stanza["SHA256"] == sha256(deb) and int(stanza["Size"]) == deb.stat().st_size

    keyring = repo / "archive-keyring.gpg"
    for args in (["InRelease"], ["Release.gpg", "Release"]):
        subprocess.run(
            ["gpgv", "--keyring", str(keyring), *args], cwd=dist, check=True, capture_output=True
        )

    apt = client(tmp_path, repo, keyring)
    update = apt.run("update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stdout + update.stderr
    assert "Candidate: 1.0" in apt.policy("mss-repo-probe")
    fetched = apt.run("download", "mss-repo-probe", cwd=apt.top / "download")
    assert fetched.returncode == 0, fetched.stderr
    assert (apt.top / "download" / deb.name).read_bytes() == deb.read_bytes()


def test_key_named_by_fingerprint_comes_from_the_callers_keyring(tmp_path, keys):
    repo = tmp_path / "repo"
    env = {**os.environ, "GNUPGHOME": str(keys["home"])}
    result = publish(repo, "--key", keys["fpr"], make_deb(tmp_path, "1.0"), env=env)
    assert f"signed by {keys['fpr']}" in result.stdout
    update = client(tmp_path, repo, repo / "archive-keyring.gpg").run("update")
    assert update.returncode == 0, update.stderr


def test_passphrase_comes_from_a_file_never_the_command_line(tmp_path):
    home = tmp_path / "gnupg"
    fpr = new_key(home, "Locked Key <locked@example.invalid>", passphrase="s3cret words")
    keyfile = tmp_path / "locked.asc"
    keyfile.write_bytes(
        gpg(
            home,
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "s3cret words",
            "--armor",
            "--export-secret-keys",
            fpr,
        ).stdout
    )
    subprocess.run(
        ["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False
    )
    secret = tmp_path / "passphrase"
    secret.write_text("s3cret words\n")
    secret.chmod(0o600)
    deb = make_deb(tmp_path, "1.0")
    refused = publish(tmp_path / "no", "--key-file", keyfile, deb, check=False)
    assert refused.returncode == 1
    assert "give --passphrase-file FILE" in refused.stderr
    assert not (tmp_path / "no").exists()  # checked before anything is written
    result = publish(tmp_path / "repo", "--key-file", keyfile, "--passphrase-file", secret, deb)
    assert f"signed by {fpr}" in result.stdout


def test_tampered_packages_index_is_refused_by_apt(tmp_path, keys):
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"))
    # An attacker on the mirror edits every form of the index consistently.
    bindir = repo / "dists/stable/main/binary-all"
    text = (bindir / "Packages").read_text().replace("probe package", "evil package")
    (bindir / "Packages").write_text(text)
    (bindir / "Packages.gz").write_bytes(gzip.compress(text.encode()))
    (bindir / "Packages.xz").write_bytes(lzma.compress(text.encode()))

    apt = client(tmp_path, repo, repo / "archive-keyring.gpg")
    update = apt.run("update")
    assert update.returncode != 0
    assert "Hash Sum mismatch" in update.stdout + update.stderr
    assert "Unable to locate" in apt.run("download", "mss-repo-probe").stderr

    check = publish(repo, "--verify-only", check=False)
    assert check.returncode == 1
    assert "does not match its size or SHA256 in Release" in check.stderr


def test_tampered_release_or_foreign_key_is_refused_by_apt(tmp_path, keys):
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"))
    foreign = client(tmp_path / "foreign", repo, keys["other"]).run("update")
    assert foreign.returncode != 0
    assert "NO_PUBKEY" in foreign.stdout + foreign.stderr

    inrelease = repo / "dists/stable/InRelease"
    inrelease.write_text(
        inrelease.read_text().replace("Label: matrix-synapse-setup", "Label: matrix-synapse-setuq")
    )
    tampered = client(tmp_path / "tampered", repo, repo / "archive-keyring.gpg").run("update")
    assert tampered.returncode != 0
    assert "BADSIG" in tampered.stdout + tampered.stderr


def test_tampered_deb_is_refused_by_apt_and_by_the_check(tmp_path, keys):
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"))
    pooled = repo / "pool/main/m/mss-repo-probe/mss-repo-probe_1.0_all.deb"
    (tmp_path / "evil").mkdir()
    pooled.write_bytes(make_deb(tmp_path / "evil", "1.0", payload="evil").read_bytes())
    apt = client(tmp_path, repo, repo / "archive-keyring.gpg")
    assert apt.run("update").returncode == 0
    fetched = apt.run("download", "mss-repo-probe", cwd=apt.top / "download")
    assert fetched.returncode != 0
    assert "mismatch" in fetched.stdout + fetched.stderr
    check = publish(repo, "--verify-only", check=False)
    assert check.returncode == 1 and "mss-repo-probe 1.0" in check.stderr


def test_unsigned_repository_is_refused_by_default_apt(tmp_path):
    repo = tmp_path / "repo"
    result = publish(repo, "--unsigned", make_deb(tmp_path, "1.0"))
    assert "UNSIGNED" in result.stdout
    assert not (repo / "dists/stable/InRelease").exists()
    update = client(tmp_path, repo, None).run("update")
    assert update.returncode != 0
    assert "is not signed" in update.stdout + update.stderr


def test_publishing_a_new_version_keeps_the_old_one(tmp_path, keys):
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"))
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.1"))
    with open(repo / "dists/stable/main/binary-all/Packages") as fh:
        versions = sorted(p["Version"] for p in Packages.iter_paragraphs(fh, use_apt_pkg=False))
    assert versions == ["1.0", "1.1"]
    apt = client(tmp_path, repo, repo / "archive-keyring.gpg")
    assert apt.run("update").returncode == 0
    assert "Candidate: 1.1" in apt.policy("mss-repo-probe")


def test_a_published_version_is_never_replaced(tmp_path, keys):
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"))
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    (tmp_path / "other").mkdir()
    changed = make_deb(tmp_path / "other", "1.0", payload="different")
    result = publish(repo, "--key-file", keys["file"], changed, check=False)
    assert result.returncode == 1
    assert "raise the version in debian/changelog" in result.stderr
    assert "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key-file", "/nonexistent/key.asc"], "cannot read key file /nonexistent/key.asc"),
        (["--key", "0000000000000000000000000000000000000000"], "no single secret key matches"),
    ],
)
def test_bad_key_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    repo = tmp_path / "repo"
    env = {**os.environ, "GNUPGHOME": str(tmp_path / "empty-gnupg")}
    (tmp_path / "empty-gnupg").mkdir(mode=0o700)
    result = publish(repo, *args, make_deb(tmp_path, "1.0"), env=env, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not repo.exists()


def test_source_package_is_published_signed_and_fetched_by_apt_get_source(tmp_path, keys):
    (tmp_path / "src").mkdir()
    dsc = make_source(tmp_path / "src", "1.0")
    tarball = dsc.with_name("mss-repo-probe_1.0.tar.xz")
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"), dsc)

    dist = repo / "dists" / "stable"
    with open(dist / "Release", "rb") as fh:
        listed = {entry["name"]: entry for entry in Release(fh)["SHA256"]}
    for name in ("Sources", "Sources.gz", "Sources.xz"):
        path = dist / "main" / "source" / name
        assert listed[f"main/source/{name}"]["sha256"] == sha256(path)
    plain = (dist / "main/source/Sources").read_bytes()
    assert gzip.decompress((dist / "main/source/Sources.gz").read_bytes()) == plain
    assert lzma.decompress((dist / "main/source/Sources.xz").read_bytes()) == plain
    (stanza,) = list(Sources.iter_paragraphs(plain.decode(), use_apt_pkg=False))
    assert stanza["Package"] == "mss-repo-probe" and stanza["Version"] == "1.0"
    pooldir = repo / stanza["Directory"]
    assert stanza["Directory"] == "pool/main/m/mss-repo-probe"
    assert (pooldir / tarball.name).read_bytes() == tarball.read_bytes()
    # The .dsc is clearsigned with the repository's key; its fields are the original's.
    pooled_dsc = pooldir / dsc.name
    assert pooled_dsc.read_bytes().startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")
    assert dict(Dsc(pooled_dsc.read_bytes())) == dict(Dsc(dsc.read_bytes()))
    subprocess.run(
        ["gpgv", "--keyring", str(repo / "archive-keyring.gpg"), dsc.name],
        cwd=pooldir,
        check=True,
        capture_output=True,
    )
    # Publishing the same source again keeps the published (signed) .dsc as it is.
    before = pooled_dsc.read_bytes()
    publish(repo, "--key-file", keys["file"], dsc)
    assert pooled_dsc.read_bytes() == before

    apt = client(tmp_path, repo, repo / "archive-keyring.gpg", types="deb deb-src")
    update = apt.run("update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stdout + update.stderr
    fetched = apt.run("source", "--download-only", "mss-repo-probe", cwd=apt.top / "download")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert (apt.top / "download" / tarball.name).read_bytes() == tarball.read_bytes()
    assert (apt.top / "download" / dsc.name).read_bytes() == before


def test_tampered_source_tarball_is_refused_by_apt_and_by_the_check(tmp_path, keys):
    (tmp_path / "src").mkdir()
    dsc = make_source(tmp_path / "src", "1.0")
    repo = tmp_path / "repo"
    publish(repo, "--key-file", keys["file"], make_deb(tmp_path, "1.0"), dsc)
    (tmp_path / "evil").mkdir()
    evil = make_source(tmp_path / "evil", "1.0", payload="evil")
    pooled = repo / "pool/main/m/mss-repo-probe/mss-repo-probe_1.0.tar.xz"
    pooled.write_bytes(evil.with_name(pooled.name).read_bytes())

    check = publish(repo, "--verify-only", check=False)
    assert check.returncode == 1
    assert "source mss-repo-probe 1.0: mss-repo-probe_1.0.tar.xz differs from Sources" in (
        check.stderr
    )
    apt = client(tmp_path, repo, repo / "archive-keyring.gpg", types="deb deb-src")
    assert apt.run("update").returncode == 0
    fetched = apt.run("source", "--download-only", "mss-repo-probe", cwd=apt.top / "download")
    assert fetched.returncode != 0
    assert "mismatch" in fetched.stdout + fetched.stderr

    # Publishing a different source under a published version is refused.
    refused = publish(repo, "--key-file", keys["file"], evil, check=False)
    assert refused.returncode == 1 and "raise the version" in refused.stderr

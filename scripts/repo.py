#!/usr/bin/python3
"""Publish .deb files and source packages as a signed apt repository, then check it.

    scripts/repo.py OUTDIR --suite S (--key FPR | --key-file F | --unsigned) DEB|DSC...
    scripts/repo.py OUTDIR --suite S --verify-only [--keyring K]

A source package is given by its .dsc; the files it names are taken from beside it.
Layout (what apt, `apt-get source` and mirror tools expect):

    OUTDIR/pool/main/<initial>/<source>/<name>_<version>_<arch>.deb
    OUTDIR/pool/main/<initial>/<source>/<source>_<version>.dsc (and its .tar.xz)
    OUTDIR/dists/<suite>/main/binary-all/Packages{,.gz,.xz}
    OUTDIR/dists/<suite>/main/source/Sources{,.gz,.xz}
    OUTDIR/dists/<suite>/Release, InRelease, Release.gpg
    OUTDIR/archive-keyring.gpg   (the signing key's public part, for signed-by=)

apt-ftparchive writes the indices and the Release file; gpg signs the Release
file and each unsigned .dsc (clearsigned, as an upload's is); gpgv and
python-debian read the result back: signatures valid, every index listed in
Release with the right size and SHA256, every .deb with the size and hashes
its Packages stanza claims, every file of a source package with the size and
SHA256 its Sources stanza claims.  Files already in the pool are kept, so
publishing a new version into an existing directory keeps the old ones.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

COMPONENT = "main"
ARCH = "all"
KEYRING_NAME = "archive-keyring.gpg"
PROG = "repo"


class RepoError(Exception):
    """A failure with a message for the person publishing."""


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, **kwargs)
    except FileNotFoundError:
        raise RepoError(
            f"{cmd[0]} is not installed: run scripts/bootstrap (it installs apt-utils and gnupg)"
        ) from None
    except subprocess.CalledProcessError as err:
        detail = (err.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise RepoError(f"{' '.join(cmd[:2])} failed: {' / '.join(detail)}") from None


def control_fields(deb: Path) -> dict[str, str]:
    from debian.debfile import DebFile

    try:
        control = DebFile(str(deb)).debcontrol()
    except (OSError, ValueError) as err:
        raise RepoError(f"{deb} is not a readable .deb ({err}): give built packages") from None
    return dict(control)


def pool_path(fields: dict[str, str]) -> Path:
    source = fields.get("Source", fields["Package"]).split()[0]
    initial = source[:4] if source.startswith("lib") else source[0]
    name = f"{fields['Package']}_{fields['Version'].split(':')[-1]}_{fields['Architecture']}.deb"
    return Path("pool") / COMPONENT / initial / source / name


def dsc_fields(dsc: Path) -> dict:
    from debian.deb822 import Dsc

    try:
        with open(dsc, "rb") as fh:
            fields = Dsc(fh)
    except (OSError, ValueError) as err:
        raise RepoError(f"{dsc} is not a readable .dsc ({err})") from None
    if "Source" not in fields or "Version" not in fields:
        raise RepoError(f"{dsc} is not a source package's .dsc (no Source or Version)")
    return fields


def source_pool_dir(fields: dict) -> Path:
    source = fields["Source"]
    initial = source[:4] if source.startswith("lib") else source[0]
    return Path("pool") / COMPONENT / initial / source


def dsc_says(data: bytes) -> dict[str, str]:
    """A .dsc's fields, parsed: an inline signature's armour is not part of them."""
    from debian.deb822 import Dsc

    return dict(Dsc(data))


def add_source(outdir: Path, dsc: Path, signer: Signer | None) -> list[Path]:
    """The .dsc (signed by *signer* unless it is already signed) and the files it names."""
    fields = dsc_fields(dsc)
    pooldir = outdir / source_pool_dir(fields)
    data = dsc.read_bytes()
    if signer is not None and not data.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----"):
        signed = signer.gpg(
            "--local-user", signer.fpr, "--digest-algo", "SHA512", "--clearsign", input=data
        )
    else:
        signed = data
    names = [entry["name"] for entry in fields.get("Checksums-Sha256", [])]
    if not names:
        raise RepoError(f"{dsc.name} names no file in Checksums-Sha256")
    for name in names:
        if not (dsc.parent / name).is_file():
            raise RepoError(f"{dsc.name} names {name}, which is not beside it")
    added = []
    dest = pooldir / dsc.name
    if dest.exists():
        # A signature carries its own date: the same fields signed again are the same .dsc.
        if dsc_says(dest.read_bytes()) != dsc_says(data):
            raise RepoError(_replaced(outdir, dest))
    else:
        added.append((dest, signed))
    for name in names:
        target = pooldir / name
        content = (dsc.parent / name).read_bytes()
        if target.exists():
            if target.read_bytes() != content:
                raise RepoError(_replaced(outdir, target))
        else:
            added.append((target, content))
    for target, content in added:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        os.chmod(target, 0o644)
    return [target for target, _ in added]


def _replaced(outdir: Path, dest: Path) -> str:
    return (
        f"{dest.relative_to(outdir)} is already published with different content: "
        f"a published version is never replaced; raise the version in debian/changelog"
    )


def add_to_pool(outdir: Path, debs: list[Path]) -> list[Path]:
    added = []
    for deb in debs:
        fields = control_fields(deb)
        if fields.get("Architecture") != ARCH:
            raise RepoError(
                f"{deb.name} is Architecture: {fields.get('Architecture')}; "
                f"this repository carries only Architecture: {ARCH} packages"
            )
        dest = outdir / pool_path(fields)
        if dest.exists() and dest.read_bytes() != deb.read_bytes():
            raise RepoError(_replaced(outdir, dest))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(deb, dest)
        os.chmod(dest, 0o644)
        added.append(dest)
    return added


def write_indices(outdir: Path, suite: str, origin: str, label: str, codename: str) -> Path:
    dist = outdir / "dists" / suite
    bindir = dist / COMPONENT / f"binary-{ARCH}"
    bindir.mkdir(parents=True, exist_ok=True)
    packages = run(
        ["apt-ftparchive", "--arch", ARCH, "packages", f"pool/{COMPONENT}"], cwd=outdir
    ).stdout
    write_index(bindir / "Packages", packages)
    (bindir / "Release").write_text(
        f"Archive: {suite}\nOrigin: {origin}\nLabel: {label}\n"
        f"Component: {COMPONENT}\nArchitecture: {ARCH}\n"
    )
    srcdir = dist / COMPONENT / "source"
    sources = run(["apt-ftparchive", "sources", f"pool/{COMPONENT}"], cwd=outdir).stdout
    if sources.strip():
        srcdir.mkdir(parents=True, exist_ok=True)
        write_index(srcdir / "Sources", sources)
        (srcdir / "Release").write_text(
            f"Archive: {suite}\nOrigin: {origin}\nLabel: {label}\n"
            f"Component: {COMPONENT}\nArchitecture: source\n"
        )
    for stale in ("Release", "InRelease", "Release.gpg"):
        (dist / stale).unlink(missing_ok=True)
    options = {
        "Origin": origin,
        "Label": label,
        "Suite": suite,
        "Codename": codename,
        "Architectures": ARCH,
        "Components": COMPONENT,
        "Description": f"{label} ({suite})",
    }
    cmd = ["apt-ftparchive"]
    for key, value in options.items():
        cmd += ["-o", f"APT::FTPArchive::Release::{key}={value}"]
    # MD5 and SHA1 are obsolete for Release files; apt uses SHA256 and SHA512.
    cmd += [
        "-o",
        "APT::FTPArchive::Release::MD5=false",
        "-o",
        "APT::FTPArchive::Release::SHA1=false",
    ]
    release = run([*cmd, "release", "."], cwd=dist).stdout
    (dist / "Release").write_bytes(release)
    return dist


def write_index(path: Path, data: bytes) -> None:
    """An index and its .gz and .xz forms."""
    path.write_bytes(data)
    # Fixed mtime (0) in the gzip header so the index depends only on its content.
    with open(path.with_name(path.name + ".gz"), "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(data)
    path.with_name(path.name + ".xz").write_bytes(lzma.compress(data, preset=6))


class Signer:
    """gpg with the caller's keyring (--key) or a throwaway GNUPGHOME (--key-file)."""

    def __init__(self, key: str | None, key_file: Path | None, passphrase_file: Path | None):
        self.tmp = None
        self.env = dict(os.environ)
        self.passphrase_file = passphrase_file
        try:
            self.fpr = self._setup(key, key_file)
        except BaseException:
            self.close()
            raise

    def _setup(self, key: str | None, key_file: Path | None) -> str:
        if key_file is not None:
            self.tmp = tempfile.TemporaryDirectory(prefix="repo-gnupg-")
            self.env["GNUPGHOME"] = self.tmp.name
            os.chmod(self.tmp.name, 0o700)
            try:
                data = key_file.read_bytes()
            except OSError as err:
                raise RepoError(f"cannot read key file {key_file}: {err.strerror}") from None
            self.gpg("--import", input=data)
            secret = self.fingerprints(secret=True)
            if len(secret) != 1:
                raise RepoError(
                    f"{key_file} holds {len(secret)} secret keys: give a file with exactly "
                    f"one secret signing key (gpg --export-secret-keys --armor FPR)"
                )
            key = secret[0]
        fpr = self.resolve(key)
        # Sign a probe first, so that a key that cannot sign (a passphrase nobody can
        # type in batch mode, an expired key) fails before the repository is touched.
        try:
            self.gpg("--local-user", fpr, "--clearsign", input=b"probe\n")
        except RepoError as err:
            hint = (
                ""
                if self.passphrase_file
                else "; if the key has a passphrase, give --passphrase-file FILE"
            )
            raise RepoError(f"key {fpr} cannot sign ({err}){hint}") from None
        return fpr

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:
        cmd = ["gpg", "--batch", "--yes", "--no-tty", "--quiet"]
        if self.passphrase_file is not None:
            cmd += ["--pinentry-mode", "loopback", "--passphrase-file", str(self.passphrase_file)]
        return run([*cmd, *args], input=input, env=self.env).stdout

    def fingerprints(self, secret: bool, name: str | None = None) -> list[str]:
        args = ["--with-colons", "--fingerprint"]
        args.append("--list-secret-keys" if secret else "--list-keys")
        if name:
            args.append(name)
        out = self.gpg(*args).decode()
        fprs, want = [], False
        for line in out.splitlines():
            fields = line.split(":")
            if fields[0] in ("sec", "pub"):
                want = True
            elif fields[0] in ("ssb", "sub"):
                want = False
            elif fields[0] == "fpr" and want:
                fprs.append(fields[9])
                want = False
        return fprs

    def resolve(self, key: str) -> str:
        try:
            fprs = self.fingerprints(secret=True, name=key)
        except RepoError:
            fprs = []
        if len(fprs) != 1:
            raise RepoError(
                f"no single secret key matches {key!r} in "
                f"{self.env.get('GNUPGHOME', '~/.gnupg')}: give its full fingerprint "
                f"(gpg --list-secret-keys) or use --key-file"
            )
        return fprs[0]

    def sign(self, dist: Path) -> None:
        release = dist / "Release"
        self.gpg(
            "--local-user",
            self.fpr,
            "--digest-algo",
            "SHA512",
            "--clearsign",
            "--output",
            str(dist / "InRelease"),
            str(release),
        )
        self.gpg(
            "--local-user",
            self.fpr,
            "--digest-algo",
            "SHA512",
            "--detach-sign",
            "--armor",
            "--output",
            str(dist / "Release.gpg"),
            str(release),
        )

    def export_public(self, dest: Path) -> None:
        data = self.gpg("--export", self.fpr)
        dest.write_bytes(data)
        os.chmod(dest, 0o644)

    def close(self) -> None:
        if self.tmp is not None:
            # gpg-agent for the throwaway home: stop it before removing the directory.
            subprocess.run(
                ["gpgconf", "--kill", "all"], env=self.env, check=False, capture_output=True
            )
            self.tmp.cleanup()


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(outdir: Path, suite: str, keyring: Path | None) -> list[str]:
    """Read the repository back; return a list of what is wrong (empty when good)."""
    from debian.deb822 import Packages, Release

    problems: list[str] = []
    dist = outdir / "dists" / suite
    release_file = dist / "Release"
    if not release_file.exists():
        return [f"{release_file} is missing"]
    if keyring is not None:
        for args in (["InRelease"], ["Release.gpg", "Release"]):
            result = subprocess.run(
                ["gpgv", "--keyring", str(keyring), *args],
                cwd=dist,
                capture_output=True,
                check=False,
            )
            if result.returncode:
                problems.append(f"gpgv does not accept {args[0]} with {keyring}")
        with open(dist / "InRelease", "rb") as fh:
            inline = Release(fh)
        with open(release_file, "rb") as fh:
            if dict(inline) != dict(Release(fh)):
                problems.append("InRelease and Release differ")
    with open(release_file, "rb") as fh:
        release = Release(fh)
    if release.get("Suite") != suite:
        problems.append(f"Release says Suite: {release.get('Suite')}, not {suite}")
    if ARCH not in release.get("Architectures", "").split():
        problems.append(f"Release does not list architecture {ARCH}")
    listed = {}
    for entry in release.get("SHA256", []):
        listed[entry["name"]] = entry
        path = dist / entry["name"]
        if not path.exists():
            problems.append(f"Release lists {entry['name']}, which is missing")
            continue
        if path.stat().st_size != int(entry["size"]) or _digest(path, "sha256") != entry["sha256"]:
            problems.append(f"{entry['name']} does not match its size or SHA256 in Release")
    for path in sorted(dist.rglob("*")):
        name = str(path.relative_to(dist))
        if path.is_file() and path.parent != dist and name not in listed:
            problems.append(f"{name} is not listed in Release")
    bindir = f"{COMPONENT}/binary-{ARCH}"
    texts = {}
    for name, opener in (
        ("Packages", open),
        ("Packages.gz", gzip.open),
        ("Packages.xz", lzma.open),
    ):
        path = dist / bindir / name
        if f"{bindir}/{name}" not in listed:
            problems.append(f"{bindir}/{name} is not in Release")
            continue
        with opener(path, "rb") as fh:
            texts[name] = fh.read()
    if len(set(texts.values())) > 1:
        problems.append("Packages, Packages.gz and Packages.xz differ")
    count = 0
    with open(dist / bindir / "Packages", "rb") as fh:
        for stanza in Packages.iter_paragraphs(fh, use_apt_pkg=False):
            count += 1
            deb = outdir / stanza["Filename"]
            label = f"{stanza['Package']} {stanza['Version']}"
            if not deb.is_file():
                problems.append(f"{label}: {stanza['Filename']} is missing")
                continue
            if deb.stat().st_size != int(stanza["Size"]):
                problems.append(f"{label}: size differs from Packages")
            for field, algo in (("SHA256", "sha256"), ("MD5sum", "md5")):
                if field in stanza and _digest(deb, algo) != stanza[field]:
                    problems.append(f"{label}: {field} differs from Packages")
            if "SHA256" not in stanza:
                problems.append(f"{label}: no SHA256 in Packages")
    if count == 0:
        problems.append("Packages lists no package")
    problems += verify_sources(outdir, dist, listed, keyring)
    return problems


def verify_sources(outdir: Path, dist: Path, listed: dict, keyring: Path | None) -> list[str]:
    """The Sources index (when there is one): each source package's files as it says."""
    from debian.deb822 import Sources

    problems: list[str] = []
    srcdir = f"{COMPONENT}/source"
    if not (dist / srcdir / "Sources").exists():
        return problems
    texts = {}
    for name, opener in (("Sources", open), ("Sources.gz", gzip.open), ("Sources.xz", lzma.open)):
        if f"{srcdir}/{name}" not in listed:
            problems.append(f"{srcdir}/{name} is not in Release")
            continue
        with opener(dist / srcdir / name, "rb") as fh:
            texts[name] = fh.read()
    if len(set(texts.values())) > 1:
        problems.append("Sources, Sources.gz and Sources.xz differ")
    count = 0
    with open(dist / srcdir / "Sources", "rb") as fh:
        for stanza in Sources.iter_paragraphs(fh, use_apt_pkg=False):
            count += 1
            label = f"source {stanza['Package']} {stanza['Version']}"
            entries = stanza.get("Checksums-Sha256", [])
            if not entries:
                problems.append(f"{label}: no Checksums-Sha256 in Sources")
            for entry in entries:
                path = outdir / stanza["Directory"] / entry["name"]
                if not path.is_file():
                    problems.append(f"{label}: {entry['name']} is missing")
                elif (
                    path.stat().st_size != int(entry["size"])
                    or _digest(path, "sha256") != entry["sha256"]
                ):
                    problems.append(f"{label}: {entry['name']} differs from Sources")
            dscs = [e["name"] for e in entries if e["name"].endswith(".dsc")]
            if keyring is not None:
                for name in dscs:
                    result = subprocess.run(
                        ["gpgv", "--keyring", str(keyring), name],
                        cwd=outdir / stanza["Directory"],
                        capture_output=True,
                        check=False,
                    )
                    if result.returncode:
                        problems.append(f"{label}: gpgv does not accept {name} with {keyring}")
    if count == 0:
        problems.append("Sources lists no source package")
    return problems


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="repository root (created if missing)")
    parser.add_argument(
        "debs",
        type=Path,
        nargs="*",
        help=".deb files and source packages (.dsc, with its files beside it) to publish",
    )
    parser.add_argument("--suite", required=True, help="suite name, e.g. stable or bookworm")
    parser.add_argument("--codename", help="Codename field (default: the suite)")
    parser.add_argument("--origin", default="matrix-synapse-setup")
    parser.add_argument("--label", default="matrix-synapse-setup")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", help="sign with this key (fingerprint) from your GnuPG keyring")
    how.add_argument("--key-file", type=Path, help="sign with the one secret key in this file")
    how.add_argument("--unsigned", action="store_true", help="no signature (local use only)")
    how.add_argument("--verify-only", action="store_true", help="only check an existing repo")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help="file holding the key's passphrase (never on the command line)",
    )
    parser.add_argument(
        "--keyring", type=Path, help="with --verify-only: public keyring the signatures must match"
    )
    args = parser.parse_intermixed_args(argv)
    if "/" in args.suite or not args.suite.strip():
        parser.error(f"--suite {args.suite!r}: give a plain name such as stable or bookworm")
    if not args.verify_only and not args.debs:
        parser.error("give at least one .deb or .dsc to publish")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    outdir = args.outdir.resolve()
    if args.verify_only:
        keyring = args.keyring
        if keyring is None and (outdir / "dists" / args.suite / "InRelease").exists():
            keyring = outdir / KEYRING_NAME
        problems = verify(outdir, args.suite, keyring)
    else:
        for deb in args.debs:
            if not deb.is_file():
                raise RepoError(f"{deb} does not exist: build it first (invoke build)")
        signer = None
        if not args.unsigned:
            signer = Signer(args.key, args.key_file, args.passphrase_file)
        try:
            outdir.mkdir(parents=True, exist_ok=True)
            dscs = [p for p in args.debs if p.suffix == ".dsc"]
            # Every .dsc is read before anything is written.
            for dsc in dscs:
                dsc_fields(dsc)
            added = add_to_pool(outdir, [p for p in args.debs if p.suffix != ".dsc"])
            for dsc in dscs:
                added += add_source(outdir, dsc, signer)
            dist = write_indices(
                outdir, args.suite, args.origin, args.label, args.codename or args.suite
            )
            keyring = None
            if signer is not None:
                signer.sign(dist)
                keyring = outdir / KEYRING_NAME
                signer.export_public(keyring)
        finally:
            if signer is not None:
                signer.close()
        problems = verify(outdir, args.suite, keyring)
        for path in added:
            print(f"{PROG}: published {path.relative_to(outdir)}")
        print(
            f"{PROG}: {dist.relative_to(outdir)}: "
            + (f"signed by {signer.fpr}" if signer else "UNSIGNED (local use only)")
        )
    if problems:
        for problem in problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 1
    print(
        f"{PROG}: {outdir}: checked (Release, Packages, Sources, file hashes"
        + (", signatures)" if keyring else ")")
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RepoError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(1)

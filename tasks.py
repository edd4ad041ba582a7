"""Developer tasks for matrix-synapse-setup.  `invoke --list` shows them.

Run `scripts/bootstrap` once on a fresh Debian 12 machine (or `scripts/bootstrap build`,
which also builds); the tasks then use Debian's /usr/bin/python3 and tools.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
BUILD = ROOT / "build"
PACKAGE = "matrix-synapse-setup"
PYTHON = "/usr/bin/python3"
RUFF = ROOT / ".venv" / "bin" / "ruff"
TEST_KINDS = ("unit", "integration", "system")
# Each pass's JUnit file, and the durations report made from them.
RESULTS = BUILD / "test-results"
# Which system tests a changed file touches (`invoke test --changed`).
TOUCHES = ROOT / "tests" / "system" / "touches.toml"
# The integration tests' second pass: the language of the cluster's messages
# (tests/integration/conftest.py reads it; empty means English).
PG_LC_MESSAGES_ENV = "MSS_PG_LC_MESSAGES"
FRENCH = "fr_FR.UTF-8"
# Shell scripts of the system-test harness (scripts/devtools), for shellcheck.
SYSTEM_TEST_SHELL = [
    "scripts/devtools/root-customize.sh",
    "scripts/devtools/inroot/policy-rc.d",
    "scripts/devtools/synapse-standin/DEBIAN/postinst",
    "scripts/devtools/synapse-standin/DEBIAN/prerm",
    "scripts/devtools/synapse-standin/DEBIAN/postrm",
    "scripts/devtools/synapse-standin/etc/init.d/matrix-synapse",
]
MAINTAINER_SCRIPTS = ("config", "preinst", "postinst", "prerm", "postrm")
# A pass that includes the system tests runs on this many pytest-xdist workers: each
# scenario has its own root and namespaces.  One scenario at a time leaves 2 cores about
# 40 % idle (systemd, Synapse and apt wait); 3 workers keep them busy, 4 gained nothing
# more (measured on 2 cores).  tests/conftest.py keeps the unit and integration tests
# together on one worker, in order.
WORKERS_ENV = "MSS_TEST_WORKERS"
DEFAULT_WORKERS = 3


def workers() -> int:
    """MSS_TEST_WORKERS, else DEFAULT_WORKERS; 1 runs the system tests one at a time."""
    text = os.environ.get(WORKERS_ENV, "").strip() or str(DEFAULT_WORKERS)
    if not text.isdigit() or int(text) < 1:
        raise Exit(f"{WORKERS_ENV}={text!r}: give a whole number of workers, 1 or more")
    return int(text)


def version() -> str:
    """The package version, as debian/changelog says."""
    from debian.changelog import Changelog

    with open(ROOT / "debian" / "changelog", encoding="utf-8") as fh:
        return str(Changelog(fh, max_blocks=1).version)


def deb_path() -> Path:
    return DIST / f"{PACKAGE}_{version()}_all.deb"


def source_paths() -> list[Path]:
    """The native source package in dist/: its .dsc and the .tar.xz the .dsc names."""
    return [DIST / f"{PACKAGE}_{version()}.dsc", DIST / f"{PACKAGE}_{version()}.tar.xz"]


def build_outputs() -> list[Path]:
    """Everything `invoke build` puts in dist/: sources, .deb, .buildinfo and .changes."""
    stem = f"{PACKAGE}_{version()}_all"  # an Architecture: all build
    return [
        *source_paths(),
        deb_path(),
        DIST / f"{stem}.buildinfo",
        DIST / f"{stem}.changes",
    ]


def changelog_epoch() -> int:
    """SOURCE_DATE_EPOCH: the date of debian/changelog's top entry."""
    from email.utils import parsedate_to_datetime

    from debian.changelog import Changelog

    with open(ROOT / "debian" / "changelog", encoding="utf-8") as fh:
        return int(parsedate_to_datetime(Changelog(fh, max_blocks=1).date).timestamp())


def stage_tree(top: Path, files: list[str], dest: Path) -> None:
    """Copy *files* of the tree at *top* to *dest*, as the source package records them.

    dpkg-source puts a native package's tree into its tarball as it finds it: the
    directory's name, each file's mode and (clamped to SOURCE_DATE_EPOCH) its date.
    So the copy has none of the checkout's: 0644 or 0755 (executable or not),
    directories 0755, every file dated SOURCE_DATE_EPOCH, whatever the umask, the
    clock or the checkout's age.  *dest*'s own name should be the package's."""
    epoch = changelog_epoch()
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(top / name, target)
        os.chmod(target, 0o755 if os.access(top / name, os.X_OK) else 0o644)
        os.utime(target, (epoch, epoch))
    for directory in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
        os.chmod(directory, 0o755)  # noqa: S103 - a source tree is readable by all


def source_files() -> list[str]:
    """Files that make the package: tracked or new, never ignored ones."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted(p for p in out.split("\0") if p and (ROOT / p).is_file())


def inputs_digest(files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        path = ROOT / name
        digest.update(name.encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(path.read_bytes())
    return digest.hexdigest()


# dpkg-buildpackage's command for the source package and the Architecture: all .deb
# (scripts/repro.py runs the same one), with Debian's tools first on PATH: the build
# runs Debian's python3, as on a buildd, whatever else a developer has installed.
BUILDPACKAGE = ["dpkg-buildpackage", "--build=source,all", "--no-sign"]
BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@task(help={"force": "rebuild even if nothing changed", "dry_run": "say what would be done"})
def build(c, force=False, dry_run=False):
    """Build the source package and the .deb into dist/ (skipped when nothing changed).

    dist/ gets the native source package (.dsc, .tar.xz), the .deb, and the .buildinfo
    and .changes files, unsigned.  The tree built is the files git tracks (or would
    track) copied into build/src-*/, so the source tarball holds nothing else."""
    files = source_files()
    digest = inputs_digest(files)
    deb = deb_path()
    outputs = build_outputs()
    stamp = DIST / f".{deb.name}.inputs"

    def up_to_date() -> bool:
        return (
            not force
            and all(p.exists() for p in outputs)
            and stamp.exists()
            and stamp.read_text() == digest
        )

    if dry_run:
        what = "is up to date" if up_to_date() else f"would be built from {len(files)} files"
        print(f"{deb.relative_to(ROOT)} and its source package {what}")
        return
    BUILD.mkdir(exist_ok=True)
    # Builds started side by side (test sessions, CI steps) take turns; each
    # builds in its own directory and moves its files into dist/, each in one rename.
    with open(BUILD / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if up_to_date():
            print(f"{deb.relative_to(ROOT)} is up to date")
            return
        workdir = Path(tempfile.mkdtemp(prefix="src-", dir=BUILD))
        try:
            srcdir = workdir / PACKAGE
            stage_tree(ROOT, files, srcdir)
            c.run(f"cd {srcdir} && {shlex.join(BUILDPACKAGE)}", echo=True, env={"PATH": BUILD_PATH})
            missing = [p.name for p in outputs if not (workdir / p.name).exists()]
            if missing:
                raise Exit(f"dpkg-buildpackage did not produce {', '.join(missing)}")
            DIST.mkdir(exist_ok=True)
            stamp.unlink(missing_ok=True)
            # The .changes last: it names the others.
            for path in outputs:
                os.replace(workdir / path.name, path)
            stamp.write_text(digest)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    for path in outputs:
        print(f"built {path.relative_to(ROOT)}")


@task
def lint(c):
    """ruff on the Python, shellcheck on the maintainer scripts, lintian (pedantic) on the
    .changes: the source package and the .deb."""
    build(c)
    if not RUFF.exists():
        raise Exit(f"{RUFF} is missing: run scripts/bootstrap first")
    c.run(f"{RUFF} check .", echo=True)
    c.run(f"{RUFF} format --check --diff .", echo=True)
    scripts = [f"debian/{s}" for s in MAINTAINER_SCRIPTS if (ROOT / "debian" / s).exists()]
    scripts += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "scripts").glob("*.sh"))]
    scripts += ["scripts/bootstrap", ".ci/run", "debian/pg_upgradecluster.d/matrix-synapse-setup"]
    scripts += [
        str(p.relative_to(ROOT))
        for d in ("debian/tests", "scripts/piuparts")
        for p in sorted((ROOT / d).glob("*"))
        if p.name != "control"
    ]
    scripts += SYSTEM_TEST_SHELL
    scripts += [f"scripts/dbc-anchor/DEBIAN/{s}" for s in ("config", "postinst", "prerm", "postrm")]
    c.run("shellcheck " + " ".join(scripts), echo=True)
    changes = deb_path().with_suffix(".changes")
    c.run(
        f"lintian --fail-on error,warning,info,pedantic --pedantic --display-info {changes}",
        echo=True,
    )


def changed_files(base: str) -> list[str]:
    """Files that differ from the merge base of HEAD and BASE: committed since, staged,
    unstaged and untracked (not ignored)."""

    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True)
        return [line for line in out.stdout.decode().split("\0") if line]

    try:
        fork = "".join(git("merge-base", "HEAD", base)).strip()
        changed = git("diff", "-z", "--name-only", fork)
        changed += git("ls-files", "-z", "--others", "--exclude-standard")
    except subprocess.CalledProcessError as err:
        raise Exit(
            f"cannot tell what changed since {base!r}: `{shlex.join(err.cmd)}` failed "
            f"(exit {err.returncode}); give --changed=BRANCH with a branch or commit that exists"
        ) from None
    return sorted(set(changed))


def system_tests_for(changed: list[str]) -> list[str]:
    """The system test files that CHANGED touches, through tests/system/touches.toml: a file
    no pattern there names counts as touching them all; a changed system test file runs
    itself (["self"])."""
    import fnmatch
    import tomllib

    with open(TOUCHES, "rb") as fh:
        touches: dict[str, list[str]] = tomllib.load(fh)["touches"]
    every = sorted(p.name for p in (ROOT / "tests" / "system").glob("test_*.py"))
    chosen: set[str] = set()
    for path in changed:
        hits = [tests for pattern, tests in touches.items() if fnmatch.fnmatchcase(path, pattern)]
        if not hits:
            print(f"--changed: {path} is not in {TOUCHES.relative_to(ROOT)}: every system test")
            return every
        for tests in hits:
            if tests == ["*"]:
                tests = every
            elif tests == ["self"]:  # a system test file: itself
                tests = [Path(path).name] if (ROOT / path).exists() else []
            chosen.update(tests)
    unknown = chosen - set(every)
    if unknown:
        raise Exit(f"{TOUCHES.relative_to(ROOT)} names missing tests: {', '.join(sorted(unknown))}")
    return sorted(chosen)


@task(
    help={
        "kind": "comma-separated subset of unit,integration,system (default: all)",
        "k": "only tests matching this pytest -k expression",
        "changed": "the inner loop: unit and integration tests, and only the system tests "
        "that the files changed since this branch (default main) touch; no lint gate",
    },
    optional=["changed"],
)
def test(c, kind="", k="", changed=None):
    """Run the whole suite: lint gate, unit, integration, system (or --kind to choose).
    The integration tests run twice: with PostgreSQL's messages in English, then the
    tests marked server_language in French.  Each pass writes a JUnit file to
    build/test-results/; the end prints the slowest tests and the system tests' time per
    release (scripts/devtools/durations.py)."""
    kinds = [x for x in kind.split(",") if x] or list(TEST_KINDS)
    unknown = set(kinds) - set(TEST_KINDS)
    if unknown:
        raise Exit(
            f"unknown test kind(s) {', '.join(sorted(unknown))}: use {', '.join(TEST_KINDS)}"
        )
    paths = [f"tests/{x}" for x in kinds]
    if changed is not None:
        base = changed if isinstance(changed, str) and changed else "main"
        files = changed_files(base)
        print(f"--changed: {len(files)} file(s) differ from {base}: {' '.join(files) or '-'}")
        chosen = system_tests_for(files) if "system" in kinds else []
        paths = [p for p in paths if p != "tests/system"]
        paths += [f"tests/system/{name}" for name in chosen]
        if not chosen:
            kinds = [x for x in kinds if x != "system"]
    elif not kind:
        lint(c)  # the whole suite includes the lint gate (it builds the .deb first)
    if "system" in kinds:
        build(c)
        # The cached roots and layers once, here: each xdist worker would otherwise build
        # a missing one itself, at the same time as the others.
        roots(c)
        layers(c)
    select = f" -k {k!r}" if k else ""
    parallel = workers() if "system" in kinds else 1
    # Pass 1: everything selected, the integration tests against an English cluster.
    # Pass 2: the integration tests whose outcome depends on the server's language again,
    # against a cluster (and a libpq) speaking French: every error must be classified
    # and advised the same way.
    passes = [("English", paths, "")]
    if "integration" in kinds:
        passes.append(("French", ["tests/integration"], FRENCH))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for old in RESULTS.glob("*.xml"):
        old.unlink()
    failed: list[str] = []
    for number, (language, paths, lc_messages) in enumerate(passes, 1):
        name = f"test pass {number} of {len(passes)}"
        what = ", ".join(paths) + (f" -k {k!r}" if k else "")
        if "tests/integration" in paths:
            name += f" ({language})"
            what += f"; PostgreSQL in {language} ({PG_LC_MESSAGES_ENV}={lc_messages})"
        print(f"=== {name}: {what} ===", flush=True)
        spread = ""
        if parallel > 1 and any(p.startswith("tests/system") for p in paths):
            spread = f" -n {parallel} --dist loadgroup"
        junit = RESULTS / f"pass-{number}-{language.lower()}.xml"
        result = c.run(
            f"{PYTHON} -m pytest {' '.join(paths)}{select}{spread} --junitxml={junit}",
            echo=True,
            warn=True,
            pty=False,
            env={PG_LC_MESSAGES_ENV: lc_messages},
        )
        if result.exited == 5:
            if k and number > 1:
                # -k chose none of the integration tests: pass 1 ran what it chose
                print(f"{name}: no integration test matches -k {k!r}: nothing to run again")
                continue
            raise Exit(f"{name}: pytest collected no tests: that is a failure, not a pass")
        if result.exited == 1:
            # Tests failed: the next pass still runs, to tell whether they fail in one
            # language only.
            print(f"{name}: tests failed (pytest exit 1)", flush=True)
            failed.append(name)
        elif result.exited:  # interrupted, internal or usage error: stop here
            raise Exit(f"{name}: pytest exit {result.exited}", code=result.exited)
    c.run(f"{PYTHON} -m scripts.devtools.durations {RESULTS}", echo=True, warn=True)
    if failed:
        raise Exit(f"tests failed in {' and '.join(failed)}", code=1)


BENCH_PARTS = ("scripts", "synapse", "provision", "migration")


@task(
    help={
        "only": "one of scripts, synapse, provision, migration (default: all)",
        "suite": "Debian release of the roots (default: bookworm for scripts, trixie for "
        "synapse and migration)",
        "runs": "samples of each package for the scripts' benchmark (default 6)",
        "repeat": "runs per provisioning measurement",
        "rounds": "rounds of the Synapse and migration benchmarks, each in fresh roots",
        "seed_from": "make the migration's cached data set from this directory (homeserver.db "
        "and mss.test.signing.key of the same Synapse) instead of generating it (~25 min)",
        "workers": "synapse: the client workers preset with these counts, e.g. 1,2,3 for the "
        "curve, or none (default 1)",
        "messages": "synapse: messages with 8 senders (default the script's, 3000; half as "
        "many with 1 sender)",
    }
)
def bench(c, only="", suite="", runs=6, repeat=10, rounds=0, seed_from="", workers="", messages=0):
    """Benchmarks, nothing asserted; each runs side by side with what it compares to.  scripts:
    `dpkg --configure` and an unchanged `dpkg-reconfigure` against a dbconfig-common
    package doing the same job (scripts/bench_scripts.py); synapse: a real Synapse on
    SQLite, on the database this package made with one process, and with the client
    workers preset behind nginx (scripts/bench_synapse.py); provision: against a
    throwaway cluster (scripts/bench.py); migration: a 50,000-event homeserver.db against
    synapse_port_db alone (scripts/bench_migration.py)."""
    if only and only not in BENCH_PARTS:
        raise Exit(f"--only {only}: use one of {', '.join(BENCH_PARTS)}")
    parts = [only] if only else list(BENCH_PARTS)
    if set(parts) & {"scripts", "synapse", "migration"}:
        build(c)
    commands = {
        "scripts": [
            "scripts/bench_scripts.py", "--suite", suite or "bookworm", "--runs", str(int(runs))
        ],
        "synapse": ["scripts/bench_synapse.py", "--suite", suite or "trixie"]
        + (["--rounds", str(int(rounds))] if rounds else [])
        + (["--workers", workers] if workers else [])
        + (["--messages", str(int(messages))] if messages else []),
        "provision": ["scripts/bench.py", "--repeat", str(int(repeat))],
        "migration": ["scripts/bench_migration.py", "--suite", suite or "trixie"]
        + ["--rounds", str(int(rounds) or 1)]
        + (["--seed-from", seed_from] if seed_from else []),
    }  # fmt: skip
    for part in parts:
        result = c.run(shlex.join([PYTHON, *commands[part]]), echo=True, warn=True)
        if result.exited:
            raise Exit(f"the {part} benchmark failed (exit {result.exited})", code=result.exited)


@task(help={"dry_run": "say what would be removed"})
def clean(c, dry_run=False):
    """Remove build/, dist/ and caches (the system-test root cache is kept in build/cache)."""
    targets = [DIST, ROOT / ".pytest_cache", ROOT / ".ruff_cache"]
    targets += [BUILD / "autopkgtest", BUILD / "piuparts"]  # their logs
    targets += sorted(BUILD.glob("src-*"))  # left by an interrupted build
    # Beside the project's own modules only: .venv and the root cache are not ours to clean.
    targets += sorted(
        {(ROOT / f).parent / "__pycache__" for f in source_files() if f.endswith(".py")}
    )
    for target in targets:
        if target.exists():
            print(("would remove " if dry_run else "removing ") + str(target.relative_to(ROOT)))
            if not dry_run:
                shutil.rmtree(target)


# --- Publishing: apt repository, reproducibility, autopkgtest, piuparts ---


@task(
    help={
        "suite": "suite name in dists/ (default: stable)",
        "key": "sign with this key (fingerprint) from your GnuPG keyring",
        "key_file": "sign with the one secret key in this file (imported into a temporary home)",
        "passphrase_file": "file holding the key's passphrase, if it has one",
        "unsigned": "no signature: for local use only, apt refuses it without [trusted=yes]",
        "out": "repository root (default: dist/repo); existing versions are kept",
    }
)
def repo(c, suite="stable", key="", key_file="", passphrase_file="", unsigned=False, out=""):
    """Publish the .deb and the source package into a signed apt repository, then check it."""
    if sum(map(bool, (key, key_file, unsigned))) != 1:
        raise Exit("give exactly one of --key FINGERPRINT, --key-file FILE or --unsigned")
    build(c)
    args = [str(ROOT / "scripts" / "repo.py"), out or str(DIST / "repo"), str(deb_path())]
    args.append(str(source_paths()[0]))  # the .dsc; the tarball it names is beside it
    args += ["--suite", suite]
    if key:
        args += ["--key", key]
    elif key_file:
        args += ["--key-file", key_file]
    else:
        args += ["--unsigned"]
    if passphrase_file:
        args += ["--passphrase-file", passphrase_file]
    result = c.run(shlex.join([PYTHON, *args]), echo=True, warn=True)
    if result.exited:
        raise Exit(code=result.exited)


@task(
    help={
        "suite": "Debian release of the build root: bookworm (default) or trixie",
        "nocheck": "DEB_BUILD_OPTIONS=nocheck (no unit tests at build time)",
    }
)
def rebuild(c, suite="bookworm", nocheck=False):
    """Rebuild from the source package in a clean root (only Build-Depends), offline.

    Publishes dist/ into a throwaway unsigned repository, then scripts/clean_build.py:
    `apt-get source` and `dpkg-buildpackage -b` as an unprivileged user.  On bookworm
    the .deb must be byte-identical to dist/'s."""
    build(c)
    with tempfile.TemporaryDirectory(prefix="mss-rebuild-") as tmp:
        repo_dir = Path(tmp) / "repo"
        publish = [PYTHON, str(ROOT / "scripts" / "repo.py"), str(repo_dir), str(deb_path())]
        publish += [str(source_paths()[0]), "--suite", "stable", "--unsigned"]
        c.run(shlex.join(publish), echo=True)
        args = [PYTHON, str(ROOT / "scripts" / "clean_build.py"), str(repo_dir)]
        args += ["--suite", suite, "--output-dir", str(BUILD / "clean-build" / suite)]
        if suite == "bookworm":  # the release `invoke build` runs on: the same toolchain
            args += ["--compare", str(deb_path())]
        if nocheck:
            args.append("--nocheck")
        result = c.run(shlex.join(args), echo=True, warn=True)
    if result.exited:
        raise Exit(code=result.exited)


@task(help={"keep": "build below this directory and keep the trees and .debs"})
def repro(c, keep=""):
    """Build twice (other dir, umask, clock, TZ, locale): the .debs must be identical."""
    args = [PYTHON, str(ROOT / "scripts" / "repro.py")]
    if keep:
        args += ["--keep", keep]
    result = c.run(shlex.join(args), echo=True, warn=True)
    if result.exited:
        raise Exit(code=result.exited)


@task(
    help={
        "suite": "Debian release of the testbed: bookworm (default) or trixie",
        "test": "only this test of debian/tests/control (repeatable)",
        "shell_fail": "open a shell in the testbed when a test fails",
    },
    iterable=["test"],
    auto_shortflags=False,
)
def autopkgtest(c, suite="bookworm", test=None, shell_fail=False):
    """Run debian/tests with autopkgtest (chroot virt-server, fresh offline root per test)."""
    build(c)
    args = [PYTHON, str(ROOT / "scripts" / "run_autopkgtest.py"), str(deb_path())]
    args += ["--suite", suite]
    for name in test or []:
        args += ["--test", name]
    if shell_fail:
        args.append("--shell-fail")
    result = c.run(shlex.join(args), echo=True, warn=True, pty=shell_fail)
    if result.exited:
        raise Exit(
            f"autopkgtest failed (exit {result.exited}): see build/autopkgtest/", code=result.exited
        )


# --- System tests: the cached Debian roots ---


@task(
    help={
        "suite": "bookworm or trixie (repeatable; default: both)",
        "force": "rebuild even if the cache is up to date",
        "dry_run": "say what would be built, and how",
    },
    iterable=["suite"],
)
def roots(c, suite=None, force=False, dry_run=False):
    """Build or refresh the system tests' cached Debian roots (build/cache/system-*.tar.zst)."""
    args = [PYTHON, "-m", "scripts.devtools.roots"]
    for name in suite or []:
        args += ["--suite", name]
    if force:
        args.append("--force")
    if dry_run:
        args.append("--dry-run")
    c.run(shlex.join(args), echo=True)


@task(help={"force": "rebuild even if cached"})
def dendrite(c, force=False):
    """Build Dendrite's binaries and sample configuration for the system test, with the
    host's Go, into build/dendrite-<version>/ (scripts/devtools/dendrite.py; cached)."""
    args = [PYTHON, "-m", "scripts.devtools.dendrite"]
    if force:
        args.append("--force")
    c.run(shlex.join(args), echo=True)


@task(
    help={
        "suite": "bookworm or trixie (repeatable; default: both)",
        "dry_run": "say what would be built",
    },
    iterable=["suite"],
)
def layers(c, suite=None, dry_run=False):
    """Build or refresh the system tests' cached layers on those roots (build/cache/layers/:
    PostgreSQL installed; Synapse laid out and started once; Synapse with a user, a room and
    messages in SQLite), keyed by their inputs (scripts/devtools/layers.py)."""
    args = [PYTHON, "-m", "scripts.devtools.layers"]
    for name in suite or []:
        args += ["--suite", name]
    if dry_run:
        args.append("--dry-run")
    c.run(shlex.join(args), echo=True)


@task(
    help={
        "from_repo": "upgrade from the version in this apt repository (default: this tree "
        "built with a lower version)",
        "from_suite": "the suite of --from-repo (default: stable)",
        "suite": "Debian release of the chroot: bookworm (default) or trixie",
        "keep_env": "keep piuparts' chroot (debugging)",
    }
)
def piuparts(c, suite="bookworm", from_repo="", from_suite="stable", keep_env=False):
    """piuparts install/remove/purge and upgrade cycles (needs the Debian mirror)."""
    build(c)
    args = [PYTHON, str(ROOT / "scripts" / "run_piuparts.py"), str(deb_path())]
    args += ["--suite", suite]
    if from_repo:
        args += ["--from-repo", from_repo, "--from-suite", from_suite]
    if keep_env:
        args.append("--keep-env")
    result = c.run(shlex.join(args), echo=True, warn=True)
    if result.exited:
        raise Exit("piuparts failed: see build/piuparts/*.log", code=result.exited)


ns = Collection(build, lint, test, bench, clean)
ns.add_task(repo)
ns.add_task(repro)
ns.add_task(rebuild)
ns.add_task(autopkgtest)
ns.add_task(piuparts)
ns.add_task(roots)
ns.add_task(layers)
ns.add_task(dendrite)

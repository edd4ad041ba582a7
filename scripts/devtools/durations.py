"""How long each test took: read the JUnit files that `invoke test` writes, report the
slowest tests and the system scenarios' time per Debian release.

`invoke test` gives pytest `--junitxml=build/test-results/<pass>.xml` for each pass, then
calls :func:`report`, which writes every test's duration, slowest first, to
build/test-results/durations.txt and prints the 15 slowest and the totals.  A test's time
is pytest's default for JUnit: setup, call and teardown together, so a journey's shared
root is counted in the test that made it.

Run as a script: `/usr/bin/python3 -m scripts.devtools.durations [DIR]`.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent.parent
RESULTS = PROJECT / "build" / "test-results"
SUITES = ("bookworm", "trixie")
SHOWN = 15
_SUITE = re.compile(r"\b(" + "|".join(SUITES) + r")\b")


@dataclass(frozen=True)
class Timing:
    run: str  # the JUnit file's stem: the pass it came from
    test: str  # module path and test name, as pytest names it
    seconds: float
    outcome: str  # passed, failed, error or skipped

    @property
    def suite(self) -> str | None:
        """The Debian release of a system scenario (from its parameters), else None."""
        if not self.test.startswith("tests/system/"):
            return None
        params = self.test.partition("[")[2]
        found = _SUITE.search(params)
        return found.group(1) if found else None


def read(path: Path) -> list[Timing]:
    """The test cases of one JUnit file."""
    timings = []
    # pytest's own file, from this run: not untrusted input.
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        module = case.get("classname", "").replace(".", "/")
        # A test in a class: classname ends with the class; keep it after "::".
        parts = module.split("/")
        if parts and parts[-1][:1].isupper():
            module = "/".join(parts[:-1]) + ".py::" + parts[-1]
        else:
            module += ".py"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                break
        seconds = float(case.get("time") or 0)
        timings.append(Timing(path.stem, f"{module}::{case.get('name')}", seconds, outcome))
    return timings


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def report(directory: Path = RESULTS, shown: int = SHOWN, out=sys.stdout) -> list[Timing]:
    """Write DIRECTORY/durations.txt and print the slowest tests and the totals."""
    timings = [t for f in sorted(directory.glob("*.xml")) for t in read(f)]
    if not timings:
        print(f"no test results in {directory}", file=out)
        return []
    ran = sorted((t for t in timings if t.outcome != "skipped"), key=lambda t: -t.seconds)
    lines = [f"{t.seconds:9.1f} s  {t.outcome:7}  {t.run}  {t.test}" for t in ran]
    (directory / "durations.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(
        f"--- the {min(shown, len(ran))} slowest tests (all in {directory}/durations.txt)", file=out
    )
    for line in lines[:shown]:
        print(line, file=out)
    for suite in SUITES:
        mine = [t for t in ran if t.suite == suite]
        if mine:
            total = sum(t.seconds for t in mine)
            print(f"system scenarios on {suite}: {len(mine)} tests, {minutes(total)}", file=out)
    for run in sorted({t.run for t in ran}):
        mine = [t for t in ran if t.run == run]
        total = sum(t.seconds for t in mine)
        print(f"{run}: {len(mine)} tests, {minutes(total)} of test time", file=out)
    return ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--shown", type=int, default=SHOWN, help="how many slow tests to print")
    args = parser.parse_args(argv)
    report(args.directory, args.shown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

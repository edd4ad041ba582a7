"""A picture of files (runs inside a system-test root, as root): every directory, regular
file and symlink under the given trees, with its metadata and content digest, as JSON on
standard output.  Read-only: it opens files for reading and writes nothing.

    python3 picture.py [--exclude PATH]... TREE...

Each entry: path -> {"type": "dir"|"file"|"link", "mode", "uid", "gid", "mtime_ns",
"ctime_ns"} plus "size" and "sha256" (files) or "target" (links).  A directory's entry
makes a file created and removed again between two pictures visible (its mtime moves).
A tree that does not exist is recorded as absent (its own entry missing); other file
types (sockets, fifos) are listed with their type only.
"""

import hashlib
import json
import os
import stat
import sys


def entry(path: str, st: os.stat_result) -> dict:
    item = {
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }
    if stat.S_ISDIR(st.st_mode):
        item["type"] = "dir"
    elif stat.S_ISLNK(st.st_mode):
        item["type"] = "link"
        item["target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        item["type"] = "file"
        item["size"] = st.st_size
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        item["sha256"] = digest.hexdigest()
    else:
        item = {"type": "other", "mode": item["mode"]}
    return item


def main(argv: list[str]) -> None:
    excludes, trees = [], []
    args = iter(argv)
    for arg in args:
        if arg == "--exclude":
            excludes.append(next(args).rstrip("/"))
        else:
            trees.append(arg.rstrip("/") or "/")

    def excluded(path: str) -> bool:
        return any(path == ex or path.startswith(ex + "/") for ex in excludes)

    picture: dict[str, dict] = {}
    for tree in trees:
        if excluded(tree) or not os.path.lexists(tree):
            continue
        picture[tree] = entry(tree, os.lstat(tree))
        for top, dirs, files in os.walk(tree):
            dirs[:] = sorted(d for d in dirs if not excluded(os.path.join(top, d)))
            for name in sorted(dirs + files):
                path = os.path.join(top, name)
                if excluded(path):
                    continue
                try:
                    picture[path] = entry(path, os.lstat(path))
                except FileNotFoundError:
                    picture[path] = {"type": "vanished while looking"}
    json.dump(picture, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1:])

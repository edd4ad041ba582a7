"""Make the in-tree package importable with Debian's /usr/bin/python3."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

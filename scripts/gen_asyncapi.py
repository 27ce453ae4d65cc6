"""Write docs/asyncapi.yaml from schemas/*.avsc and the config defaults (``--check``: fail if stale).

    uv run python scripts/gen_asyncapi.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devstack.asyncapi import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`make openapi`: writes docs/openapi.json, the coordinator API's contract, from the app itself.

The file is committed so a change to the API shows up in review as a change to its schema;
tests/backend/test_openapi.py fails while it is stale.

    python scripts/openapi.py           # (re)write docs/openapi.json
    python scripts/openapi.py --check   # exit 1 if docs/openapi.json differs from the app's schema
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPENAPI_PATH = ROOT / "docs" / "openapi.json"


def render() -> str:
    """The app's OpenAPI schema as committed: sorted keys, indented, one trailing newline."""
    from backend.app import create_app  # imports torch: only when asked

    return json.dumps(create_app().openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/openapi.json from the coordinator app.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    schema, name = render(), OPENAPI_PATH.relative_to(ROOT)
    if args.check:
        if not OPENAPI_PATH.exists() or OPENAPI_PATH.read_text() != schema:
            print(f"{name} is stale: run `make openapi` and commit it", file=sys.stderr)
            return 1
        print(f"{name} is up to date")
        return 0
    OPENAPI_PATH.write_text(schema)
    print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

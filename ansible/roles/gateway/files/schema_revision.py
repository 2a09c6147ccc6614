"""Print the gateway database's schema revision and the installed code's head as one JSON line.

Run with the gateway's virtualenv Python and the config path: `python schema_revision.py CONFIG`.
`slurm-gateway migrate` always upgrades; this read lets Ansible report a change only when the
revision moves. It changes nothing (a SQLite database that does not exist yet reads as null).
"""

import json
import os
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.database import create_database_engine
from gateway.schema_migrations import current_revision, head_revision


def main() -> None:
    """Read both revisions and print them."""
    config = load_config(Path(sys.argv[1]), os.environ)
    url = config.database.url
    sqlite_prefix = "sqlite:///"
    if url.startswith(sqlite_prefix) and not Path(url.removeprefix(sqlite_prefix)).exists():
        current = None
    else:
        engine = create_database_engine(url)
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
    print(json.dumps({"current": current, "head": head_revision()}))


if __name__ == "__main__":
    main()

"""One benchmark in its own process: `python -m bench.child NAME CONFIG.json RESULT.json`.

The runner gave this process an environment whose DATABASE_URL names a fresh, empty database;
the child migrates it, runs the benchmark and writes the result (or the error) as JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

MODULES = {
    "ingest": "bench.ingest",
    "storm": "bench.storm",
    "analysis": "bench.analysis",
    "pages": "bench.pages",
    "llm": "bench.llm_cost",
    "profile": "bench.profile_webhook",
}


def main(argv: list[str]) -> int:
    name, config_path, result_path = argv
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vigil.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from .common import Config

    cfg = Config.load(config_path)
    started = time.monotonic()
    out: dict = {"name": name}
    try:
        call_command("migrate", verbosity=0, interactive=False)
        out["migrate_s"] = round(time.monotonic() - started, 2)
        module = importlib.import_module(MODULES[name])
        out["result"] = module.run(cfg)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    out["seconds"] = round(time.monotonic() - started, 1)
    Path(result_path).write_text(json.dumps(out, indent=2, default=str))
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run every benchmarks/bench_*.py in turn and print their tables (``make bench``).

    python benchmarks/run_all.py [--json-dir DIR] [--only NAME[,NAME]]

Each script runs in its own process with this interpreter; its output streams through as it
comes. With ``--json-dir`` every script that takes ``--json PATH`` writes its results there as
``<name>.json``. The exit status is non-zero if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(only: list[str] | None = None) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        found = [p for p in found if p.stem in only or p.stem.removeprefix("bench_") in only]
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json-dir", type=Path, help="write each benchmark's JSON results here")
    ap.add_argument("--only", help="comma-separated benchmark names (e.g. sampling,train)")
    args = ap.parse_args()
    chosen = scripts([s.strip() for s in args.only.split(",")] if args.only else None)
    if not chosen:
        print("no benchmarks/bench_*.py matched", file=sys.stderr)
        return 2
    if args.json_dir:
        args.json_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for path in chosen:
        cmd = [sys.executable, str(path)]
        if args.json_dir and '"--json"' in path.read_text():
            cmd += ["--json", str(args.json_dir / f"{path.stem}.json")]
        print(f"\n===== {path.name} =====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"===== {path.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        if rc:
            failed.append(path.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

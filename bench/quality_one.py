"""Run the missing quality runs of one (task, optimizer, seeds) and exit: one embedded-model job
per process, so a shell loop can take the machine's model lock once per run
(`flock /tmp/reflex-embedded.lock python bench/quality_one.py dates auto 0`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality  # noqa: E402
import quality_tasks  # noqa: E402
from run import QUALITY_RESULTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task", choices=list(quality_tasks.ALL_TASKS))
    parser.add_argument("optimizer", choices=quality.OPTIMIZERS)
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--results", type=Path, default=QUALITY_RESULTS)
    args = parser.parse_args()
    quality.run(args.results, tasks=[args.task], optimizers=[args.optimizer], seeds=args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

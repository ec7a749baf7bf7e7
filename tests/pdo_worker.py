"""One PDO worker for the two-process test: `python pdo_worker.py STORAGE_URL STUDY_NAME RUN_DIR ROUNDS`.

Runs a whole PDO compile on the fake routing task, sharing the Optuna study at STORAGE_URL with
whichever other workers use the same name, and prints its worker id on the last line.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import conftest  # noqa: E402,F401  (test environment: temp caches and run store)
from strategy_kit import run_strategy  # noqa: E402
from test_pdo import duel_respond, reasoner  # noqa: E402

from reflex_dspy.strategies.pdo import PDO  # noqa: E402


def main(storage: str, study_name: str, run_dir: str, rounds: int) -> None:
    strategy = PDO(storage=storage, study_name=study_name, mutation_frequency=2)
    run_strategy(strategy, reasoner(), respond=duel_respond, run_dir=run_dir, max_iterations=rounds,
                 train_ratio=1.0, val_ratio=0.0, mlflow=False)
    print(strategy.worker)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))

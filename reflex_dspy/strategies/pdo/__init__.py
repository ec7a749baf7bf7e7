"""PDO, the prompt duel optimizer, in its own package: one module per job.

- `strategy`: the `PDO` strategy (a round: duels, ranking, mutations, pruning, the champion);
- `sampler`: the Optuna study that holds the pool and the duels, and the double Thompson sampler;
- `duel`: scoring one duel's examples (by the metric, or a pairwise judge without gold);
- `ranking`: the rankers and their Dirichlet fusion, pure functions of the duel history;
- `variants`: where prompts come from (the tip-driven initial pool, mutations of winners).

Importing the package imports only `strategy` (and not Optuna, which PDO loads when it runs).
"""

from reflex_dspy.strategies.pdo.strategy import PDO

__all__ = ["PDO"]

"""Evaluation harness: what the defenses are worth against real attacks on real classifiers.

``evaluate(models, defenses, attacks, epsilons, threat_models, n_images)`` returns :class:`Results`
(records of clean and adversarial accuracy, perturbation norms and defense cost) that write a
markdown table, CSV, JSON, a plot and an example grid. See :mod:`fdjpeg.eval.harness` for the threat
models and :mod:`fdjpeg.eval.tasks` for the data protocol.
"""

from ..datasets import training_images
from ..tables import derived_table
from .configs import AttackConfig, DefenseConfig, attack_config, defense_config, parse_config
from .harness import THREAT_MODELS, evaluate
from .report import Results
from .tasks import Task, load_task


__all__ = [
    "AttackConfig", "DefenseConfig", "Results", "THREAT_MODELS", "Task", "attack_config", "defense_config",
    "derived_table", "evaluate", "load_task", "parse_config", "training_images",
]

"""Evaluation harness: what the defenses are worth against real attacks on real classifiers.

``evaluate(models, defenses, attacks, epsilons, threat_models, n_images)`` returns :class:`Results`
(records of clean and adversarial accuracy, perturbation norms and defense cost) that write a
markdown table, CSV, JSON, a plot and an example grid. See :mod:`fdjpeg.eval.harness` for the threat
models and :mod:`fdjpeg.eval.tasks` for the data protocol.
"""

from .. import defenses as _defenses
from .configs import AttackConfig, DefenseConfig, attack_config, defense_config, derived_table, parse_config
from .harness import THREAT_MODELS, evaluate
from .report import Results
from .tasks import Task, load_task, training_images


def _fd_derived(data: str = "fashion-mnist", passes: int = 1, threads=None):
    """Feature Distillation with the table derived from clean training images of ``data``."""
    return _defenses.build("fd", table=derived_table(training_images(data)), passes=passes, threads=threads)


if "fd-derived" not in _defenses.names():
    _defenses.register(
        "fd-derived", _fd_derived, data="fashion-mnist", passes=1, threads=None,
        description="Feature Distillation with a DeepN-JPEG-style table derived from clean training images "
        "(data: fashion-mnist, mnist or photos)",
    )

__all__ = [
    "AttackConfig", "DefenseConfig", "Results", "THREAT_MODELS", "Task", "attack_config", "defense_config",
    "derived_table", "evaluate", "load_task", "parse_config", "training_images",
]

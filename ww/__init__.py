"""ww — Weight Weaving and data-free model merging on state dicts, in torch only.

Chaves, Valle, Avila, "Weight Weaving: Parameter Pooling for Data-Free Model Merging",
arXiv 2510.13921. The repository's METHODS.md is the contract for what each function computes.

    tau = [ww.task_vector(expert, base) for expert in experts]
    merged = ww.merge("ties", tau, k=0.2)                                   # M at λ = 1
    woven = ww.weave(tau, merger="ties", pooling="avg", collaborative=True)  # no λ to choose
    model = ww.apply_task_vector(base, woven)
"""

from . import mergers as _mergers  # noqa: F401  (registers the base mergers)
from .bank import TaskVectorBank
from .merging import merge
from .pooling import POOLINGS
from .registry import MERGERS, default_lambdas
from .task_vectors import apply_task_vector, task_vector
from .weaving import weave

__all__ = [
    "MERGERS",
    "POOLINGS",
    "TaskVectorBank",
    "apply_task_vector",
    "default_lambdas",
    "merge",
    "task_vector",
    "weave",
]

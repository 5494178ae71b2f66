"""ww — Weight Weaving and data-free model merging on state dicts, in torch only.

Chaves, Valle, Avila, "Weight Weaving: Parameter Pooling for Data-Free Model Merging",
arXiv 2510.13921. docs/METHODS.md is the contract for what each function computes.

    tau = [ww.task_vector(expert, base) for expert in experts]
    merged = ww.merge("ties", tau, k=0.2)                                   # M at λ = 1
    woven = ww.weave(tau, merger="ties", pooling="avg", collaborative=True)  # no λ to choose
    model = ww.apply_task_vector(base, woven)

Large banks are merged out-of-core from disk with the same functions:

    ww.save_bank("bank.safetensors", tau)             # one task vector at a time
    woven = ww.weave(ww.open_bank("bank.safetensors"), merger="tsv_m")
"""

from . import (
    analysis,  # noqa: F401  (geometry and interference of task vectors, docs/METHODS.md §4)
    kernels,  # noqa: F401  (WW_KERNELS, expect_many_merges: when block kernels compile)
)
from . import mergers as _mergers  # noqa: F401  (registers the base mergers)
from .bank import TaskVectorBank
from .engine.bank_file import BankWriter, open_bank, save_bank
from .merging import merge
from .pooling import POOLINGS
from .registry import MERGERS, default_lambdas
from .task_vectors import apply_task_vector, task_vector
from .weaving import weave

__all__ = [
    "MERGERS",
    "POOLINGS",
    "BankWriter",
    "TaskVectorBank",
    "apply_task_vector",
    "default_lambdas",
    "merge",
    "open_bank",
    "save_bank",
    "task_vector",
    "weave",
]

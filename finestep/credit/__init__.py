"""Step-level credit assignment: step advantages (FineStep and baselines) and per-token advantages and masks.

Pure numpy, no I/O. Pipeline: ``StepBatch`` -> ``compute_advantages(batch, config)`` -> ``StepAdvantages``
-> ``batch_token_advantages(...)`` / ``step_to_token_advantages(...)`` -> ``TokenAdvantages`` (B, T).
"""

from __future__ import annotations

from finestep.credit.batch import StepBatch, history_anchors
from finestep.credit.config import ABLATIONS, CreditConfig
from finestep.credit.estimators import (
    ANCHOR_ESTIMATORS,
    ESTIMATORS,
    REFERENCES,
    Estimator,
    StepAdvantages,
    UnknownEstimatorError,
    compute_advantages,
    estimator_help,
    get_estimator,
    get_reference,
    reference_advantages,
    register_estimator,
)
from finestep.credit.ops import discounted_reverse_cumsum, group_normalize, link_smooth
from finestep.credit.tokens import (
    TokenAdvantages,
    batch_token_advantages,
    spans_to_mask,
    step_to_token_advantages,
)

__all__ = [
    "ABLATIONS",
    "ANCHOR_ESTIMATORS",
    "ESTIMATORS",
    "REFERENCES",
    "CreditConfig",
    "Estimator",
    "StepAdvantages",
    "StepBatch",
    "TokenAdvantages",
    "UnknownEstimatorError",
    "batch_token_advantages",
    "compute_advantages",
    "discounted_reverse_cumsum",
    "estimator_help",
    "get_estimator",
    "get_reference",
    "group_normalize",
    "history_anchors",
    "link_smooth",
    "reference_advantages",
    "register_estimator",
    "spans_to_mask",
    "step_to_token_advantages",
]

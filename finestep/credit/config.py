"""CreditConfig: every knob of step-level credit assignment and token masking, with FINESTEP.md defaults.

Each FineStep ablation of the paper is one entry of ``ABLATIONS`` (a few field overrides), so
``CreditConfig.ablation("no_logical")`` is the whole change. FineStep version 2 (FINESTEP.md section 2) is the
default, gated: a group whose outcomes are all equal gets no process credit (``equal_outcome_process=0``;
``CreditConfig.ablation("ungated")`` restores version 2 as first written); ``CreditConfig.ablation("v1")``
(``outcome_norm="steps"``, ``process_scale="group"``, ungated) is version 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from finestep.credit.ops import NORMALIZE_MODES

__all__ = ["ABLATIONS", "EQUAL_OUTCOMES", "OUTCOME_NORMS", "PROCESS_SCALES", "CreditConfig"]

#: finestep's outcome term: ``trajectory`` (version 2) or ``steps`` (version 1).
OUTCOME_NORMS = ("trajectory", "steps")
#: finestep's process scale: ``batch`` (version 2), ``group`` (version 1) or ``none`` (centred returns).
PROCESS_SCALES = ("batch", "group", "none")
EQUAL_OUTCOMES = ("zero", "batch")


@dataclass(frozen=True)
class CreditConfig:
    """Configuration of the credit estimators (``finestep`` and the baselines) and of the token masks.

    Fields carry their help text in ``metadata["help"]``. Fields an estimator does not use are ignored by it.
    """

    estimator: str = field(default="finestep", metadata={"help": "registered estimator name (see ESTIMATORS)"})
    gamma_p: float = field(default=0.5, metadata={"help": "process-return discount: P_t = sum gamma_p^(k-t) r_k"})
    gamma_o: float = field(
        default=0.9, metadata={"help": "outcome discount: A^O_t = gamma_o^(T-t) a_i (v2), O_t = gamma_o^(T-t) R (v1)"}
    )
    beta: float = field(default=0.3, metadata={"help": "logical smoothing weight of the linked steps' mean P"})
    lam: float = field(default=0.5, metadata={"help": "lambda, weight of the process advantage A^P"})
    eps: float = field(default=1e-6, metadata={"help": "added to the sample std in normalization"})
    normalize: str = field(
        default="group",
        metadata={"help": "group: (x - mean) / (std + eps) over the task's group (finestep: the scales of "
                          "outcome_norm and process_scale); center: x - mean, no std anywhere; "
                          "none: raw returns, no baseline (the no_group_norm ablation)"},
    )
    outcome_norm: str = field(
        default="trajectory",
        metadata={"help": "finestep A^O: trajectory (v2): GRPO's a_i over the group's trajectories, times "
                          "gamma_o^(T-t); steps (v1): O = gamma_o^(T-t) R normalized over the group's steps"},
    )
    process_scale: str = field(
        default="batch",
        metadata={"help": "finestep A^P: the group-centred P~ divided by batch (v2): its std over the live steps "
                          "of the whole batch; group (v1): the group's own std; none: not divided"},
    )
    equal_outcome: str = field(
        default="zero",
        metadata={"help": "finestep v2, a group whose outcomes are all equal: zero: every step gets A^O = 0 "
                          "(GRPO's a_i); batch: its solution steps get (R - mean) / (std + eps) over the batch's "
                          "trajectories (a right answer is pushed up, a wrong one down), its other steps A^O = 0"},
    )
    equal_outcome_process: float = field(
        default=0.0,
        metadata={"help": "finestep: the weight of A^P in a group whose outcomes are all equal, as a multiple of "
                          "lam: 0 (default, gated) gives such a group no credit at all, as GRPO does; 1 (v2 as "
                          "first written, the `ungated` ablation) credits its steps by process rewards alone"},
    )
    process_center: bool = field(
        default=True,
        metadata={"help": "finestep v2 A^P: True: P~ centred per group, then scaled; False: P~ scaled as is, "
                          "so a step no rule fires on gets 0 and the rules' signs are kept"},
    )
    per_step_index_norm: bool = field(
        default=False,
        metadata={"help": "finestep: step-level statistics per (group, step index) instead of per group (A^P's "
                          "centring and group std; A^O under outcome_norm=steps; never a_i, the batch std)"},
    )
    use_process: bool = field(default=True, metadata={"help": "finestep: False drops A^P (same as lam = 0)"})
    process_internal_only: bool = field(
        default=True,
        metadata={"help": "finestep: A^P over and on internal steps only; False: on every step, solution too"},
    )
    omega: float = field(default=1.0, metadata={"help": "gigpo: weight of the anchor-state step advantage"})
    gigpo_gamma: float = field(default=0.95, metadata={"help": "gigpo: discount of the per-step return"})
    mask_truncated_steps: bool = field(
        default=True, metadata={"help": "tokens: a step cut off by the token budget gets no loss"}
    )
    drop_zero_groups: bool = field(
        default=True, metadata={"help": "tokens: a group whose step advantages are all ~0 gets no loss"}
    )
    zero_tol: float = field(default=1e-8, metadata={"help": "tokens: |A| <= zero_tol counts as zero"})

    def __post_init__(self) -> None:
        for name in ("gamma_p", "gamma_o", "beta", "gigpo_gamma"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name in ("lam", "omega", "zero_tol", "equal_outcome_process"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.outcome_norm not in OUTCOME_NORMS:
            raise ValueError(f"outcome_norm must be one of {OUTCOME_NORMS}, got {self.outcome_norm!r}")
        if self.equal_outcome not in EQUAL_OUTCOMES:
            raise ValueError(f"equal_outcome must be one of {EQUAL_OUTCOMES}, got {self.equal_outcome!r}")
        if self.process_scale not in PROCESS_SCALES:
            raise ValueError(f"process_scale must be one of {PROCESS_SCALES}, got {self.process_scale!r}")

    @property
    def effective_lam(self) -> float:
        """The weight actually given to A^P: ``lam``, or 0 when ``use_process`` is off."""
        return self.lam if self.use_process else 0.0

    @classmethod
    def ablation(cls, name: str, **overrides: Any) -> CreditConfig:
        """The default config with the FineStep ablation ``name`` (a key of ``ABLATIONS``) and ``overrides``."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; expected one of {sorted(ABLATIONS)}")
        return cls(**{**ABLATIONS[name], **overrides})

    def with_overrides(self, **overrides: Any) -> CreditConfig:
        """A copy with some fields replaced (unknown names raise ValueError)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown CreditConfig fields {unknown}; expected some of {sorted(known)}")
        return replace(self, **overrides)


# The FineStep ablations of FINESTEP.md ("Baselines and ablations"), one switch set each, and version 1 ("v1").
# no_group_norm is "raw returns": normalize="none" drops every baseline and scale (outcome_norm and
# process_scale then have nothing to act on).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_process": {"use_process": False},
    "no_temporal": {"gamma_p": 0.0, "gamma_o": 1.0},
    "no_logical": {"beta": 0.0},
    "no_group_norm": {"normalize": "none"},
    "no_masking": {"process_internal_only": False, "mask_truncated_steps": False, "drop_zero_groups": False},
    "v1": {"outcome_norm": "steps", "process_scale": "group", "equal_outcome_process": 1.0},
    # Version 2 as first written: groups without an outcome signal credited by their process rewards alone (the
    # default until 2026-12-06; it loses 4 EX points to GRPO in the hard tier's sparse regime, docs/benchmarks.md).
    "ungated": {"equal_outcome_process": 1.0},
    # The default, spelled out (it named the variant while it was measured against "ungated").
    "gated": {"equal_outcome_process": 0.0},
}

"""StepBatch: the flattened steps of a batch of trajectories, the one input of every credit estimator.

Shapes: ``N`` trajectories, ``S`` steps (all trajectories, flattened), ``L`` links, ``K`` groups.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StepBatch", "history_anchors"]


def _as_1d(name: str, value: object, dtype: type) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if dtype is np.int64 and arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if dtype is np.bool_ and arr.size and arr.dtype != np.bool_:
        raise ValueError(f"{name} must hold booleans, got dtype {arr.dtype}")
    return np.array(arr, dtype=dtype, copy=True)  # own copy: the batch makes its arrays read-only


@dataclass(frozen=True, eq=False)
class StepBatch:
    """The steps of ``N`` trajectories, flattened into ``S`` steps; steps of a trajectory contiguous, in order.

    Per trajectory (N,):
        group: int64, trajectories sampled for the same task share an id (any integers).
        outcome: float64, the outcome reward ``R_i``.
    Per step (S,):
        traj: int64 in ``[0, N)``, non-decreasing: the trajectory of each step.
        process_reward: float64, ``r_t``, the sum of the process rules on the step.
        is_solution: bool, the step submitted the final answer (only ever the last step of its trajectory).
        anchor: int64, id of the step's history state for GiGPO (steps of one group with the same id are
            compared); ``-1`` = unknown (no step-level comparison). Defaults to all ``-1``.
    Per link (L,):
        link_src, link_dst: int64 flat step indices, ``link_src`` the later step, ``link_dst`` the earlier step
            of the same trajectory that it repairs or uses. Duplicate pairs are dropped. Default: no links.

    Derived (computed once, read-only): ``group_index`` (N,) dense group ids ``0..K-1``; ``n_groups`` K;
    ``group_size`` (K,) trajectories per group (zero-step trajectories included); ``lengths`` (N,) steps per
    trajectory; ``offsets`` (N + 1,) first flat step of each trajectory; ``position`` (S,) 0-based index of each
    step in its trajectory; ``remaining`` (S,) steps after it (``T_i - t`` with 1-based t); ``step_group`` (S,).

    A trajectory may have zero steps: it counts in trajectory-level statistics (``grpo``, ``rloo``: its ``R``
    is part of the group's mean and std) and simply has no step to credit.
    """

    group: np.ndarray
    outcome: np.ndarray
    traj: np.ndarray
    process_reward: np.ndarray
    is_solution: np.ndarray
    anchor: np.ndarray | None = None
    link_src: np.ndarray | None = None
    link_dst: np.ndarray | None = None
    group_index: np.ndarray = field(init=False, repr=False)
    n_groups: int = field(init=False)
    group_size: np.ndarray = field(init=False, repr=False)
    lengths: np.ndarray = field(init=False, repr=False)
    offsets: np.ndarray = field(init=False, repr=False)
    position: np.ndarray = field(init=False, repr=False)
    remaining: np.ndarray = field(init=False, repr=False)
    step_group: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        group = _as_1d("group", self.group, np.int64)
        outcome = _as_1d("outcome", self.outcome, np.float64)
        traj = _as_1d("traj", self.traj, np.int64)
        reward = _as_1d("process_reward", self.process_reward, np.float64)
        solution = _as_1d("is_solution", self.is_solution, np.bool_)
        n, s = group.size, traj.size
        if outcome.size != n:
            raise ValueError(f"outcome has {outcome.size} entries but group has {n} (one per trajectory)")
        if reward.size != s or solution.size != s:
            raise ValueError(
                f"per-step arrays differ in length: traj {s}, process_reward {reward.size}, "
                f"is_solution {solution.size}"
            )
        if not np.all(np.isfinite(outcome)) or not np.all(np.isfinite(reward)):
            raise ValueError("outcome and process_reward must be finite (no NaN or inf)")
        if s and (traj.min() < 0 or traj.max() >= n):
            raise ValueError(f"traj must lie in [0, {n}), got values in [{traj.min()}, {traj.max()}]")
        if s > 1 and np.any(np.diff(traj) < 0):
            raise ValueError("traj must be non-decreasing: the steps of a trajectory contiguous and in order")
        anchor = np.full(s, -1, np.int64) if self.anchor is None else _as_1d("anchor", self.anchor, np.int64)
        if anchor.size != s:
            raise ValueError(f"anchor has {anchor.size} entries but there are {s} steps")
        if np.any(anchor < -1):
            raise ValueError("anchor ids must be >= 0, or -1 for unknown")

        lengths = np.bincount(traj, minlength=n).astype(np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        position = np.arange(s, dtype=np.int64) - offsets[traj]
        remaining = lengths[traj] - 1 - position
        if np.any(solution & (remaining != 0)):
            bad = int(np.flatnonzero(solution & (remaining != 0))[0])
            raise ValueError(f"step {bad} (trajectory {traj[bad]}) is a solution step but not the last step")

        src, dst = self._links(s, traj)
        uniq, group_index = np.unique(group, return_inverse=True)
        group_index = group_index.reshape(-1).astype(np.int64)
        for name, value in (
            ("group", group), ("outcome", outcome), ("traj", traj), ("process_reward", reward),
            ("is_solution", solution), ("anchor", anchor), ("link_src", src), ("link_dst", dst),
            ("group_index", group_index), ("n_groups", int(uniq.size)),
            ("group_size", np.bincount(group_index, minlength=uniq.size).astype(np.int64)),
            ("lengths", lengths), ("offsets", offsets), ("position", position), ("remaining", remaining),
            ("step_group", group_index[traj]),
        ):
            if isinstance(value, np.ndarray):
                value.setflags(write=False)
            put(name, value)

    def _links(self, s: int, traj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if (self.link_src is None) != (self.link_dst is None):
            raise ValueError("link_src and link_dst must be given together")
        if self.link_src is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        src = _as_1d("link_src", self.link_src, np.int64)
        dst = _as_1d("link_dst", self.link_dst, np.int64)
        if src.size != dst.size:
            raise ValueError(f"link_src has {src.size} entries but link_dst has {dst.size}")
        if src.size == 0:
            return src, dst
        if min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= s:
            raise ValueError(f"link endpoints must be flat step indices in [0, {s})")
        if np.any(traj[src] != traj[dst]):
            raise ValueError("a link must join two steps of the same trajectory")
        if np.any(src <= dst):
            raise ValueError("a link must point from a later step (link_src) back to an earlier one (link_dst)")
        pairs = np.unique(src * s + dst)
        return pairs // s, pairs % s

    @property
    def n_traj(self) -> int:
        """N, the number of trajectories."""
        return int(self.group.size)

    @property
    def n_steps(self) -> int:
        """S, the number of steps."""
        return int(self.traj.size)

    @property
    def outcome_varies(self) -> np.ndarray:
        """(K,) bool: the groups whose trajectories' outcomes are not all equal (False for a group of one)."""
        low = np.full(self.n_groups, np.inf)
        high = np.full(self.n_groups, -np.inf)
        np.minimum.at(low, self.group_index, self.outcome)
        np.maximum.at(high, self.group_index, self.outcome)
        return high > low

    @classmethod
    def from_lists(
        cls,
        groups: Sequence[Hashable],
        outcomes: Sequence[float],
        process_rewards: Sequence[Sequence[float]],
        is_solution: Sequence[Sequence[bool]],
        links: Sequence[Sequence[Sequence[int]]] | None = None,
        anchors: Sequence[Sequence[Hashable | None]] | None = None,
    ) -> StepBatch:
        """Build a batch from per-trajectory python lists (construction time, not the hot path).

        Args:
            groups: N hashable task keys; trajectories with equal keys form one group.
            outcomes: N outcome rewards ``R_i``.
            process_rewards: N lists, the step rewards ``r_t`` of each trajectory (may be empty).
            is_solution: N lists of flags, same lengths as ``process_rewards``; only the last step may be True.
            links: optional N lists, one list per step of 0-based indices of earlier steps of the same
                trajectory that the step repairs or uses.
            anchors: optional N lists, one hashable history key per step (``None`` = unknown); steps of one group
                with equal keys are compared by ``gigpo``. See ``history_anchors``.

        Raises:
            ValueError: naming the trajectory and step of any inconsistent entry.
        """
        n = len(groups)
        for name, seq in (("outcomes", outcomes), ("process_rewards", process_rewards),
                          ("is_solution", is_solution), ("links", links), ("anchors", anchors)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries but groups has {n} (one per trajectory)")
        group_ids: dict[Hashable, int] = {}
        anchor_ids: dict[Hashable, int] = {}
        traj: list[int] = []
        rewards: list[float] = []
        flags: list[bool] = []
        anchor: list[int] = []
        src: list[int] = []
        dst: list[int] = []
        for i in range(n):
            steps = list(process_rewards[i])
            sol = list(is_solution[i])
            t_i = len(steps)
            if len(sol) != t_i:
                raise ValueError(f"trajectory {i}: is_solution has {len(sol)} flags but {t_i} step rewards")
            if any(sol[:-1]):
                raise ValueError(f"trajectory {i}: only the last step may be a solution step")
            base = len(traj)
            if links is not None:
                if len(links[i]) != t_i:
                    raise ValueError(f"trajectory {i}: links has {len(links[i])} entries but {t_i} steps")
                for t, targets in enumerate(links[i]):
                    for k in targets:
                        if not (isinstance(k, (int, np.integer)) and 0 <= k < t):
                            raise ValueError(
                                f"trajectory {i}, step {t}: link target {k!r} must be an earlier step (0..{t - 1})"
                            )
                        src.append(base + t)
                        dst.append(base + int(k))
            if anchors is not None:
                if len(anchors[i]) != t_i:
                    raise ValueError(f"trajectory {i}: anchors has {len(anchors[i])} entries but {t_i} steps")
                anchor.extend(-1 if a is None else anchor_ids.setdefault(a, len(anchor_ids)) for a in anchors[i])
            traj.extend([i] * t_i)
            rewards.extend(float(r) for r in steps)
            flags.extend(bool(f) for f in sol)
        return cls(
            group=np.array([group_ids.setdefault(g, len(group_ids)) for g in groups], dtype=np.int64),
            outcome=np.array(outcomes, dtype=np.float64),
            traj=np.array(traj, dtype=np.int64),
            process_reward=np.array(rewards, dtype=np.float64),
            is_solution=np.array(flags, dtype=np.bool_),
            anchor=None if anchors is None else np.array(anchor, dtype=np.int64),
            link_src=np.array(src, dtype=np.int64),
            link_dst=np.array(dst, dtype=np.int64),
        )


def history_anchors(actions: Sequence[Sequence[Hashable]]) -> list[list[tuple[Hashable, ...]]]:
    """GiGPO anchor keys from per-step action keys: step ``t``'s key is the tuple of the actions before it.

    Args:
        actions: N lists, one hashable key per step (e.g. the step's canonical SQL and its observation).

    Returns:
        N lists of tuples, for ``StepBatch.from_lists(anchors=...)``: two steps of a group share an anchor when
        the trajectories took the same actions before them (every first step shares the empty history).
    """
    return [[tuple(seq[:t]) for t in range(len(seq))] for seq in actions]

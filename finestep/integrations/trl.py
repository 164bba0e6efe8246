"""FineStep in TRL: ``FineStepGRPOTrainer``, TRL's ``GRPOTrainer`` with step-level advantages (docs/trl.md).

TRL (1.16) samples multi-turn episodes itself: ``environment_factory`` gives one ``SqlToolEnv`` per rollout
(``finestep.integrations.trl_env``: our ``SqlEnv`` behind the tools ``execute_sql`` and ``submit_solution``),
its tool loop runs the calls and appends the tool output with ``tool_mask = 0``, and ``get_reward`` gives R. Stock
GRPO then gives every token of a completion one advantage. The subclass keeps all of that (generation, vLLM,
accelerate, the loss) and replaces only the advantages, after TRL has scored the completions:

1. each completion is replayed as a FineStep episode (``trl_layout.replay_episode``: one step per turn);
2. the episodes of all processes are scored through ``finestep.rewards.scoring`` and gathered, the groups being
   TRL's (``num_generations`` consecutive completions);
3. the configured estimator of ``finestep.credit``'s registry (plugins' too, ``FINESTEP_PLUGINS``) gives step
   advantages, and ``completion_advantages`` spreads them over this process's completion tokens: a (B, T)
   ``advantages`` tensor, which TRL's ``_compute_loss`` accepts as it is. Tool-output tokens get 0 (and TRL's
   ``tool_mask`` keeps them out of the loss and the token count anyway).

The token count, the loss (``loss_type``), clipping, KL and entropy terms are TRL's, so with ``estimator=grpo``
the loss and gradients are stock GRPO's (``credit.eps`` defaults to TRL's 1e-4; ``mask_truncated_steps`` to off,
truncation being TRL's ``mask_truncated_completions``). Our diagnostics are logged through TRL's logging under
``finestep/`` (EX, tool calls, redundant-call rate, mean |A^O| and |A^P|, ...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from trl import GRPOConfig, GRPOTrainer
from trl import chat_template_utils as trl_templates

from finestep.credit import CreditConfig, compute_advantages, get_estimator
from finestep.integrations.trl_env import TOOL_CHAT_TEMPLATE, SqlToolEnv
from finestep.integrations.trl_layout import ReplayedEpisode, completion_advantages, replay_episode
from finestep.models.tiny import CHATML_TEMPLATE
from finestep.plugins import load_plugins, plugins_from_env
from finestep.rewards import score_episodes, step_batch
from finestep.rewards.episodes import episode_metrics
from finestep.train.rl import credit_diagnostics

__all__ = ["TRL_CREDIT_DEFAULTS", "FineStepGRPOConfig", "FineStepGRPOTrainer", "credit_config", "tool_tokenizer"]

load_plugins(plugins_from_env())

#: ``CreditConfig`` fields whose TRL defaults differ from our trainer's: TRL's normalization epsilon, and no
#: truncated-step mask (TRL's own switch is ``mask_truncated_completions``).
TRL_CREDIT_DEFAULTS: dict[str, Any] = {"eps": 1e-4, "mask_truncated_steps": False}


def credit_config(credit: CreditConfig | Mapping[str, Any] | str | None = None) -> CreditConfig:
    """The credit settings of the TRL trainer: a ``CreditConfig`` as it is, else ``TRL_CREDIT_DEFAULTS`` updated
    with a mapping of ``CreditConfig`` fields (or an estimator name); unknown fields and estimators raise."""
    if isinstance(credit, CreditConfig):
        config = credit
    else:
        fields = {"estimator": credit} if isinstance(credit, str) else dict(credit or {})
        known = {f.name for f in dataclasses.fields(CreditConfig)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"credit: unknown fields {unknown}; expected some of {sorted(known)}")
        config = CreditConfig(**{**TRL_CREDIT_DEFAULTS, **fields})
    get_estimator(config.estimator)
    return config


def tool_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer`` ready for TRL's tool calling. Our tiny models' ChatML (or no template) becomes
    ``TOOL_CHAT_TEMPLATE`` with TRL's Qwen3 response parser; any other template is left to TRL, which sets up the
    known ones (Qwen3, Llama 3, ...). Generation pads on the left."""
    if tokenizer.chat_template in (None, CHATML_TEMPLATE, TOOL_CHAT_TEMPLATE):
        tokenizer.chat_template = TOOL_CHAT_TEMPLATE
        if getattr(trl_templates, "_SUPPORTS_RESPONSE_TEMPLATE", False):
            tokenizer.response_template = trl_templates.qwen3_template
        else:  # pragma: no cover - transformers < 5.13
            tokenizer.response_schema = trl_templates.qwen3_schema
    tokenizer.padding_side = "left"
    return tokenizer


@dataclass
class FineStepGRPOConfig(GRPOConfig):
    """``GRPOConfig`` with FineStep's credit settings as one more section (``credit``), for a single config object."""

    credit: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "CreditConfig fields, e.g. {'estimator': 'finestep', 'gamma_o': 0.9}; the TRL defaults "
                          "are TRL_CREDIT_DEFAULTS (eps 1e-4, no truncated-step mask)"},
    )  # fmt: skip


class FineStepGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose advantages are FineStep's step-level advantages (module docstring).

    Args:
        model, args, train_dataset, processing_class, **kwargs: as for ``GRPOTrainer`` (``GRPOConfig``: its keys
            ``num_generations``, ``max_completion_length``, ``gradient_accumulation_steps``, ``use_vllm``, ...).
        environment_factory: one factory of ``SqlToolEnv`` (``sql_environment_factory(tasks, settings)``).
        credit: the credit settings: a ``CreditConfig``, a mapping of its fields (``{"estimator": "grpo",
            "gamma_o": 1.0}``) or an estimator name; see ``credit_config``. Default: ``args.credit`` when ``args``
            is a ``FineStepGRPOConfig``, else ``TRL_CREDIT_DEFAULTS`` with the ``finestep`` estimator.
    """

    def __init__(
        self,
        model: Any,
        args: Any = None,
        *,
        environment_factory: Any,
        credit: CreditConfig | Mapping[str, Any] | str | None = None,
        train_dataset: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("reward_funcs"):
            raise ValueError("reward_funcs: FineStepGRPOTrainer scores the episodes itself "
                             "(finestep.rewards.scoring, through the environment's get_reward); leave it out")  # fmt: skip
        if environment_factory is None or isinstance(environment_factory, Mapping):
            raise ValueError("environment_factory: one factory of SqlToolEnv is needed (sql_environment_factory)")
        if credit is not None and getattr(args, "credit", None) is not None:
            raise ValueError("credit is given twice: as credit= and in args.credit; keep one")
        self.credit = credit_config(credit if credit is not None else getattr(args, "credit", None))
        if processing_class is None:
            from transformers import AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(model if isinstance(model, str)
                                                             else model.config._name_or_path)  # fmt: skip
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=tool_tokenizer(processing_class),
            environment_factory=environment_factory, **kwargs,
        )  # fmt: skip
        probe = self._environment_pool[None][0]
        if not isinstance(probe, SqlToolEnv):
            raise TypeError(f"environment_factory made a {type(probe).__name__}; FineStepGRPOTrainer needs SqlToolEnv")
        limit = self.args.max_tool_calling_iterations
        if limit is not None and limit < probe.settings.max_turns:
            raise ValueError(f"max_tool_calling_iterations ({limit}) must be at least the environment's max_turns "
                             f"({probe.settings.max_turns}): TRL would leave the last turns' calls unexecuted")  # fmt: skip
        self._finestep_rollout: tuple[list, list, list | None, list] | None = None
        #: the last batch's episodes, all processes' (``ReplayedEpisode``: trajectory and tool-output spans)
        self.last_episodes: list[ReplayedEpisode] = []

    # --- the two hooks --------------------------------------------------------------------------------------

    def _generate(self, prompts: list) -> tuple:
        """TRL's generation, unchanged; its token ids, tool masks and parsed completions are kept for credit."""
        out = super()._generate(prompts)
        self._finestep_rollout = (out[0], out[1], out[2], out[3])
        return out

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's batch with ``advantages`` replaced by FineStep's (B, T) token advantages."""
        output = super()._generate_and_score_completions(inputs)
        rollout, self._finestep_rollout = self._finestep_rollout, None
        if rollout is None:
            raise RuntimeError("FineStepGRPOTrainer: no rollout was recorded (rollout_func is not supported)")
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        width = int(output["completion_ids"].size(1))
        advantages, metrics = self.step_advantages(rollout, width, group_size)
        output["advantages"] = advantages.to(output["completion_ids"].device)
        for name, value in metrics.items():
            self._metrics[mode][f"finestep/{name}"].append(value)
        return output

    # --- credit ---------------------------------------------------------------------------------------------

    def step_advantages(self, rollout: tuple, width: int, group_size: int) -> tuple[torch.Tensor, dict[str, float]]:
        """This process's (B, width) token advantages from its rollout, with the batch's metrics.

        ``rollout`` is ``(prompt_ids, completion_ids, tool_mask, completions)`` of this process, as TRL's
        ``_generate`` returns them; groups are ``group_size`` consecutive completions over all processes.
        """
        begin = time.perf_counter()
        prompt_ids, completion_ids, tool_mask, completions = rollout
        masks = tool_mask if tool_mask is not None else [[1] * len(ids) for ids in completion_ids]
        environments = self.environments or []
        if len(environments) != len(completion_ids):
            raise RuntimeError(f"{len(environments)} environments for {len(completion_ids)} completions")
        start = self.accelerator.process_index * len(completion_ids)
        episodes = [
            replay_episode(env.task, p, c, m, messages, env.settings, self.eos_token_ids, self._tokenizer,
                           sample=start + n)
            for n, (env, p, c, m, messages) in enumerate(zip(environments, prompt_ids, completion_ids, masks,
                                                             completions))
        ]  # fmt: skip
        settings = environments[0].settings if environments else None
        scores = score_episodes([e.trajectory for e in episodes], settings.sandbox(), settings.rewards) if settings else []
        all_episodes: list[ReplayedEpisode] = gather_object(episodes)
        all_scores = gather_object(scores)
        for n, score in enumerate(all_scores):
            score.group = str(n // group_size)  # TRL's groups: consecutive completions, as its rewards.view(-1, G)
        batch = step_batch(all_scores)
        credit = compute_advantages(batch, self.credit)
        self.last_episodes = all_episodes
        tokens = completion_advantages(all_episodes, batch, credit.advantages, self.credit, width,
                                       rows=range(start, start + len(episodes)))  # fmt: skip
        trajectories = [e.trajectory for e in all_episodes]
        metrics = {
            **episode_metrics(trajectories, all_scores),
            **credit_diagnostics(batch, credit),
            "advantage_abs_mean": float(np.abs(credit.advantages).mean()) if credit.advantages.size else 0.0,
            "turns_after_end": float(np.mean([e.extra_turns for e in all_episodes])) if all_episodes else 0.0,
            "time_credit": time.perf_counter() - begin,  # replay, scoring, gathering, credit, token layout
        }
        return torch.from_numpy(tokens.advantages), metrics

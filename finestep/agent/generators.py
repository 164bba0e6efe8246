"""Text generation backends behind one token-in/token-out interface: HF transformers, vLLM, scripted.

A ``Generator`` starts a ``GenerationSession`` over a batch of prompts (token ids). Each ``generate`` call
runs one assistant turn for the sequences still active: it appends the given tokens (observations) to each
context, samples until a stop string, eos or the token budget, appends the sampled tokens, and returns a
``Generation`` per sequence with the tokens, their untempered log-probabilities and the stop reason. Earlier
turns are never re-tokenized: contexts are lists of token ids.

Backends (registry ``GENERATORS``, ``get_generator(name, **kw)``):
  ``hf``        ``HFGenerator``: batched sampling with a KV cache kept across turns (or re-encoding).
  ``vllm``      ``VLLMGenerator``: vLLM engine, full histories re-sent with prefix caching (optional extra).
  ``scripted``  ``ScriptedGenerator``: text from a function, for tests of the rollout.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from finestep.models.ragged import RaggedKVBatch
from finestep.models.sampling import StopChecker, sample_next

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "GENERATORS", "Generation", "GenerationSession", "Generator", "HFGenerator", "SamplingParams",
    "ScriptedGenerator", "UnknownGeneratorError", "VLLMGenerator", "get_generator", "register_generator",
]


@dataclass(frozen=True)
class SamplingParams:
    """How a turn is sampled.

    Attributes:
        temperature: 0 is greedy (argmax).
        top_p: nucleus mass kept (1 keeps all).
        max_new_tokens: tokens per turn at most (a call may pass smaller per-sequence budgets).
        stop_strings: a turn ends once its text contains one of these (the tokens completing it are kept).
        seed: seeds the sampling when no ``torch.Generator`` is given to ``start``.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop_strings: tuple[str, ...] = ("</sql>", "</solution>")
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 0:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, max_new_tokens >= 0: {self}")


@dataclass
class Generation:
    """One sampled turn of one sequence.

    Attributes:
        token_ids: the tokens sampled in this turn, stop-string tokens and eos included when produced.
        logprobs: log pi(token) of each sampled token under the model at temperature 1 (untempered).
        stop_reason: ``"stop"`` (a stop string completed), ``"eos"`` or ``"length"``.
        text: ``tokenizer.decode(token_ids, skip_special_tokens=False)``.
    """

    token_ids: list[int]
    logprobs: list[float]
    stop_reason: str
    text: str


class GenerationSession(ABC):
    """The contexts of a batch of sequences across turns (a context manager; ``close`` frees resources)."""

    @abstractmethod
    def generate(
        self,
        active: Sequence[int],
        new_tokens: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int] | None = None,
    ) -> list[Generation]:
        """Run one turn for the sequences ``active`` (indices into the prompts given to ``start``).

        For each ``k``, sequence ``active[k]`` first gets ``new_tokens[k]`` appended (observation tokens;
        empty on the first turn), then one turn is sampled until a stop string, eos, or ``max_new_tokens[k]``
        (default and cap ``params.max_new_tokens``) tokens; the sampled tokens are appended to its context. Sequences
        not in ``active`` are left untouched. Returns one ``Generation`` per entry of ``active``, in order.
        """

    def close(self) -> None:
        """Free what the session holds (KV caches)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Generator(ABC):
    """A text generation backend: ``start`` opens a session over a batch of tokenized prompts."""

    tokenizer: Any  # PreTrainedTokenizerBase

    @abstractmethod
    def start(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        generator: torch.Generator | None = None,
    ) -> GenerationSession:
        """A session whose sequence ``i`` starts as ``prompts[i]``, sampled with ``params`` and ``generator``."""


GENERATORS: dict[str, Callable[..., Generator]] = {}


class UnknownGeneratorError(KeyError):
    """Raised by ``get_generator`` for a name that is not registered."""


def register_generator(name: str) -> Callable[[type[Generator]], type[Generator]]:
    """Class decorator registering a ``Generator`` subclass under ``name`` (names are unique)."""

    def decorate(cls: type[Generator]) -> type[Generator]:
        if name in GENERATORS:
            raise ValueError(f"generator {name!r} is already registered")
        GENERATORS[name] = cls
        return cls

    return decorate


def get_generator(name: str, **kwargs: Any) -> Generator:
    """The generator registered under ``name``, built with ``kwargs``."""
    try:
        factory = GENERATORS[name]
    except KeyError:
        raise UnknownGeneratorError(
            f"unknown generator {name!r}; registered generators: {', '.join(sorted(GENERATORS))}") from None
    return factory(**kwargs)


class _Session(GenerationSession):
    """Bookkeeping common to the backends: contexts, turn counters, argument checks."""

    def __init__(self, tokenizer: Any, prompts: Sequence[Sequence[int]], params: SamplingParams) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.contexts: list[list[int]] = [[int(t) for t in p] for p in prompts]
        self.turns = [0] * len(self.contexts)

    def _begin(
        self, active: Sequence[int], new_tokens: Sequence[Sequence[int]], max_new_tokens: Sequence[int] | None
    ) -> list[int]:
        """Check the arguments, append ``new_tokens`` to the contexts; return the token budget per entry."""
        active = [int(i) for i in active]
        if len(new_tokens) != len(active):
            raise ValueError(f"{len(active)} active sequences but {len(new_tokens)} blocks of new tokens")
        if max_new_tokens is not None and len(max_new_tokens) != len(active):
            raise ValueError(f"{len(active)} active sequences but {len(max_new_tokens)} token budgets")
        if len(set(active)) != len(active) or any(not 0 <= i < len(self.contexts) for i in active):
            raise ValueError(f"active must hold distinct indices in [0, {len(self.contexts)}): {active}")
        for i, block in zip(active, new_tokens):
            self.contexts[i].extend(int(t) for t in block)
        cap = self.params.max_new_tokens
        return [cap if max_new_tokens is None else max(0, min(int(m), cap)) for m in (max_new_tokens or active)]

    def _finish(self, i: int, tokens: list[int], logprobs: list[float], reason: str) -> Generation:
        self.contexts[i].extend(tokens)
        self.turns[i] += 1
        return Generation(tokens, logprobs, reason, self.tokenizer.decode(tokens, skip_special_tokens=False))


# ----------------------------------------------------------------------------------------------------------
# HF transformers


class _HFSession(_Session):
    """A session of ``HFGenerator``: ``pending[i]`` are the tokens of context i not yet in a KV cache."""

    def __init__(self, owner: HFGenerator, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 generator: torch.Generator | None) -> None:
        super().__init__(owner.tokenizer, prompts, params)
        if any(len(c) == 0 for c in self.contexts):
            raise ValueError("every prompt needs at least one token")
        self.owner, self.model = owner, owner.model
        self.device = next(owner.model.parameters()).device
        if generator is None and params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        self.rng = generator
        self.pending: list[list[int]] = [list(c) for c in self.contexts]
        self.groups: list[RaggedKVBatch] = []
        self.checker = StopChecker(owner.tokenizer, params.stop_strings, owner.eos_ids)

    def close(self) -> None:
        self.groups = []

    def generate(
        self,
        active: Sequence[int],
        new_tokens: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int] | None = None,
    ) -> list[Generation]:
        budgets = self._begin(active, new_tokens, max_new_tokens)
        for i, block in zip(active, new_tokens):
            self.pending[int(i)].extend(int(t) for t in block)
        budget = {int(i): b for i, b in zip(active, budgets)}
        # A sequence with no token to sample skips the turn (and leaves the cache: it re-enters whole later).
        results = {i: self._finish(i, [], [], "length") for i, b in budget.items() if b == 0}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for group in self._arrange([i for i, b in budget.items() if b > 0]):
                    results.update(self._turn(group, budget))
        except BaseException:
            self._arrange([])  # no half-updated cache survives a failed turn
            raise
        finally:
            self.model.train(was_training)
        if not self.owner.reuse_cache:
            self._arrange([])  # every history is re-encoded next turn
        return [results[int(i)] for i in active]

    def _arrange(self, active: list[int]) -> list[RaggedKVBatch]:
        """Drop inactive rows from the caches; sequences in no cache (re-)enter with their whole context."""
        wanted = set(active)
        kept: list[RaggedKVBatch] = []
        for group in self.groups:
            for i in group.ids:
                if i not in wanted:
                    self.pending[i] = list(self.contexts[i])
            rows = [r for r, i in enumerate(group.ids) if i in wanted]
            if rows:
                if len(rows) < len(group):
                    group.select(rows)
                kept.append(group)
        cached = {i for group in kept for i in group.ids}
        fresh = [i for i in active if i not in cached]
        size = self.owner.batch_size or max(len(fresh), 1)
        kept += [RaggedKVBatch(self.model, fresh[s:s + size], self.owner.pad_id, self.device)
                 for s in range(0, len(fresh), size)]
        self.groups = kept
        return kept

    def _turn(self, group: RaggedKVBatch, budget: dict[int, int]) -> dict[int, Generation]:
        """One turn of the group's sequences: prefill their pending tokens, then decode step by step."""
        logits = group.prefill([self.pending[i] for i in group.ids])
        for i in group.ids:
            self.pending[i] = []
        n, p = len(group), self.params
        tokens: list[list[int]] = [[] for _ in range(n)]
        logps: list[list[float]] = [[] for _ in range(n)]
        reasons: list[str | None] = [None] * n
        while True:
            sampled, logp = sample_next(logits, p.temperature, p.top_p, self.rng)
            sampled_list, logp_list = sampled.tolist(), logp.tolist()
            for r, i in enumerate(group.ids):
                if reasons[r] is not None:
                    continue
                tokens[r].append(sampled_list[r])
                logps[r].append(float(logp_list[r]))
                reasons[r] = self.checker(tokens[r]) or ("length" if len(tokens[r]) >= budget[i] else None)
                if reasons[r] is not None:
                    self.pending[i] = [sampled_list[r]]  # sampled, not yet fed to the model
            running = [reason is None for reason in reasons]
            if not any(running):
                break
            logits = group.step(sampled, torch.tensor(running, device=self.device))
        return {i: self._finish(i, tokens[r], logps[r], reasons[r] or "length") for r, i in enumerate(group.ids)}


@register_generator("hf")
class HFGenerator(Generator):
    """Batched sampling with a transformers causal LM, token-in/token-out.

    With ``reuse_cache=True`` a session keeps one batched ``DynamicCache`` for its active sequences across
    turns: a turn feeds only the tokens added since the last one (the previous turn's last token and the
    appended observation), right-padded to a common width under a 2-D attention mask with explicit
    ``position_ids`` counting real tokens only; sequences that leave ``active`` are dropped from the cache by
    batch selection. With ``reuse_cache=False`` every turn re-encodes each whole history (the baseline).
    Greedy decoding gives the same tokens either way. (Holes count as cache slots, so a sliding-window
    attention would see a slightly shorter window; Qwen3 and Llama use full attention.)

    Attributes:
        eos_ids: token ids that end a turn: the model's ``generation_config.eos_token_id`` and the
            tokenizer's eos (may be replaced, e.g. by an empty set for fixed-length turns).

    Args:
        model: a causal LM (``PreTrainedModel`` or ``PeftModel``) supporting ``logits_to_keep``; put in eval
            mode during generation, its training mode restored afterwards.
        tokenizer: its tokenizer (decoding for stop strings and ``Generation.text``).
        reuse_cache: keep KV caches across turns.
        batch_size: sequences per forward pass at most (None: all active sequences at once).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, reuse_cache: bool = True,
                 batch_size: int | None = None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.model, self.tokenizer = model, tokenizer
        self.reuse_cache, self.batch_size = reuse_cache, batch_size
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)

    def start(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
              generator: torch.Generator | None = None) -> GenerationSession:
        """A session over ``prompts`` (each at least one token); ``generator`` (or ``params.seed``) seeds it."""
        return _HFSession(self, prompts, params, generator)


# ----------------------------------------------------------------------------------------------------------
# Scripted (tests)


class _ScriptedSession(_Session):
    def __init__(self, owner: ScriptedGenerator, prompts: Sequence[Sequence[int]], params: SamplingParams):
        super().__init__(owner.tokenizer, prompts, params)
        self.script = owner.script

    def generate(self, active: Sequence[int], new_tokens: Sequence[Sequence[int]],
                 max_new_tokens: Sequence[int] | None = None) -> list[Generation]:
        budgets = self._begin(active, new_tokens, max_new_tokens)
        out = []
        for i, budget in zip(active, budgets):
            context = self.tokenizer.decode(self.contexts[i], skip_special_tokens=False)
            text = self.script(int(i), self.turns[i], context)
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            if len(ids) > budget:
                ids, reason = ids[:budget], "length"
            else:
                reason = "stop" if any(text.endswith(s) for s in self.params.stop_strings if s) else "eos"
            out.append(self._finish(int(i), ids, [0.0] * len(ids), reason))
        return out


@register_generator("scripted")
class ScriptedGenerator(Generator):
    """Turns written by a function: ``script(sequence_index, turn_index, context_text) -> assistant text``.

    The text is encoded as is; log-probabilities are 0; the stop reason is ``"stop"`` when the text ends
    with a stop string, ``"length"`` when it was cut to the token budget, ``"eos"`` otherwise.
    """

    def __init__(self, tokenizer: Any, script: Callable[[int, int, str], str]) -> None:
        self.tokenizer, self.script = tokenizer, script

    def start(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
              generator: torch.Generator | None = None) -> GenerationSession:
        """A session over ``prompts``; ``generator`` is unused."""
        return _ScriptedSession(self, prompts, params)


# ----------------------------------------------------------------------------------------------------------
# vLLM (optional)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            "the 'vllm' generator needs vLLM, which is not installed: pip install 'finestep[vllm]'") from err
    return vllm


class _VLLMSession(_Session):
    def __init__(self, owner: VLLMGenerator, prompts: Sequence[Sequence[int]], params: SamplingParams):
        super().__init__(owner.tokenizer, prompts, params)
        self.llm = owner.llm

    def generate(self, active: Sequence[int], new_tokens: Sequence[Sequence[int]],
                 max_new_tokens: Sequence[int] | None = None) -> list[Generation]:
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        budgets = self._begin(active, new_tokens, max_new_tokens)
        p = self.params
        todo = [(int(i), b) for i, b in zip(active, budgets) if b > 0]
        requests = [TokensPrompt(prompt_token_ids=list(self.contexts[i])) for i, _ in todo]
        settings = [VLLMSamplingParams(
            temperature=p.temperature, top_p=p.top_p, max_tokens=b, stop=list(p.stop_strings),
            include_stop_str_in_output=True, logprobs=0, skip_special_tokens=False,
            # distinct per sequence and turn, or the G copies of a prompt would all sample alike
            seed=None if p.seed is None else (p.seed * 1_000_003 + i * 10_007 + self.turns[i]) % 2**31,
        ) for i, b in todo]
        outputs = self.llm.generate(requests, settings, use_tqdm=False) if todo else []
        done: dict[int, Generation] = {}
        for (i, _), output in zip(todo, outputs):
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logps = [float(step[t].logprob) for step, t in zip(completion.logprobs, ids)]
            if completion.finish_reason == "length":
                reason = "length"
            else:  # finish "stop": a stop string (str stop_reason), else eos or a stop token id
                reason = "stop" if isinstance(completion.stop_reason, str) else "eos"
            done[i] = self._finish(i, ids, logps, reason)
        return [done[int(i)] if int(i) in done else self._finish(int(i), [], [], "length") for i in active]


@register_generator("vllm")
class VLLMGenerator(Generator):
    """Generation with a vLLM engine (``vllm.LLM``), for GPUs; an optional extra: ``pip install finestep[vllm]``.

    Each turn re-sends each sequence's full token history as a ``TokensPrompt``; prefix caching (on by
    default here) makes the shared history cheap. Log-probabilities are vLLM's default raw (untempered)
    log-probabilities of the sampled tokens. ``params.seed`` gives each sequence and turn its own seed; a
    ``torch.Generator`` passed to ``start`` is not used.

    Args:
        model_path: local model folder.
        **engine_kwargs: passed to ``vllm.LLM`` (``gpu_memory_utilization``, ``dtype``, ``max_model_len``...).
    """

    def __init__(self, model_path: str, **engine_kwargs: Any) -> None:
        vllm = _import_vllm()
        engine_kwargs.setdefault("enable_prefix_caching", True)
        self.llm = vllm.LLM(model=str(model_path), **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def start(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
              generator: torch.Generator | None = None) -> GenerationSession:
        """A session over ``prompts``."""
        return _VLLMSession(self, prompts, params)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load the trainer's current weights into the colocated engine (after each policy update).

        Uses the in-process model runner (``llm.llm_engine.model_executor.driver_worker.model_runner.model``),
        so the engine must run in this process: set ``VLLM_ENABLE_V1_MULTIPROCESSING=0``. A LoRA policy is
        merged for the copy. The prefix cache is reset so no stale key/values are reused.
        """
        if hasattr(model, "merge_adapter"):  # a peft LoRA policy: copy the merged weights under the base names
            model.merge_adapter()
            try:
                items = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                         for k, v in model.state_dict().items() if "lora_" not in k}  # fmt: skip
            finally:
                model.unmerge_adapter()
        else:
            items = dict(model.state_dict())
        try:
            runner = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError as exc:
            raise RuntimeError(
                "cannot reach vLLM's model runner in this process; set VLLM_ENABLE_V1_MULTIPROCESSING=0 "
                "before starting finestep so the engine runs in-process"
            ) from exc
        runner.load_weights(items.items())
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

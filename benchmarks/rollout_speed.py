"""Speed of multi-turn rollouts on CPU with a tiny Qwen3-style model.

Section ``kv_reuse``: tokens/s of a multi-turn rollout (default: batch 16, 4 turns of 48 sampled tokens,
~300-token prompts, ~60-token observation blocks appended before each later turn) with the HF generator
keeping its KV cache across turns (``reuse_cache=True``) against re-encoding every history each turn
(``reuse_cache=False``). Turns have a fixed length (no stop strings, eos disabled); the two modes run
interleaved, ``--repeats`` times each, and the median is reported. A greedy warm-up run of each mode checks
that both give the same tokens. Results go to ``benchmarks/results/rollout_speed.json`` (atomically; the
sections not run keep their previous results) and a table is printed.

    .venv/bin/python benchmarks/rollout_speed.py [--batch 16 --turns 4 --new-tokens 48 --repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "rollout_speed.json"


def synthetic_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """SQL-flavoured lines with random identifiers: enough distinct text for a few thousand BPE merges."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    names = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(1500)]
    sql = ["SELECT", "FROM", "WHERE", "GROUP BY", "ORDER BY", "JOIN", "ON", "COUNT(*)", "AVG", "LIMIT", "="]
    return [" ".join(rng.choice(names + sql) for _ in range(rng.randint(6, 24))) + rng.choice(["?", ";", "."])
            for _ in range(n)]


def random_blocks(vocab: list[int], count: int, mean: int, spread: int, rng: random.Random) -> list[list[int]]:
    """``count`` blocks of random ordinary tokens, of lengths ``mean +- spread`` (uniform)."""
    return [[rng.choice(vocab) for _ in range(rng.randint(mean - spread, mean + spread))] for _ in range(count)]


def rollout(generator: Any, prompts: list[list[int]], observations: list[list[list[int]]], new_tokens: int,
            greedy: bool, seed: int) -> tuple[float, int, list[list[int]]]:
    """One rollout of ``len(observations) + 1`` turns; returns (seconds, tokens sampled, tokens per sequence)."""
    import torch

    from finestep.agent.generators import SamplingParams

    params = SamplingParams(temperature=0.0 if greedy else 1.0, max_new_tokens=new_tokens, stop_strings=())
    active = list(range(len(prompts)))
    sampled: list[list[int]] = [[] for _ in prompts]
    start = time.perf_counter()
    with generator.start(prompts, params, torch.Generator().manual_seed(seed)) as session:
        new: list[list[int]] = [[] for _ in active]
        for turn in range(len(observations) + 1):
            for i, gen in zip(active, session.generate(active, new)):
                sampled[i] += gen.token_ids
            if turn < len(observations):
                new = [observations[turn][i] for i in active]
    seconds = time.perf_counter() - start
    return seconds, sum(len(s) for s in sampled), sampled


def measure_kv_reuse(args: argparse.Namespace) -> dict[str, Any]:
    """Tokens/s of the rollout with and without KV-cache reuse across turns (median of interleaved repeats)."""
    import torch

    from finestep.agent.generators import HFGenerator
    from finestep.models import build_tiny_model, load_model, load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(synthetic_corpus(), Path(tmp) / "tiny", vocab_size=args.vocab,
                                hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                                num_kv_heads=args.kv_heads, intermediate_size=2 * args.hidden, seed=args.seed)
        model, tokenizer = load_model(path), load_tokenizer(path)
    special = set(tokenizer.all_special_ids)
    ordinary = [i for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
                if i not in special and not token.startswith("<")]  # no chat tokens or protocol tags
    rng = random.Random(args.seed)
    prompts = random_blocks(ordinary, args.batch, args.prompt_tokens, args.prompt_tokens // 10, rng)
    observations = [random_blocks(ordinary, args.batch, args.obs_tokens, args.obs_tokens // 4, rng)
                    for _ in range(args.turns - 1)]
    modes = {"reuse_cache": True, "re_encode": False}
    generators = {}
    for name, reuse in modes.items():
        generators[name] = HFGenerator(model, tokenizer, reuse_cache=reuse)
        generators[name].eos_ids = frozenset()  # fixed-length turns
    warm = {name: rollout(g, prompts, observations, args.new_tokens, True, args.seed)[2]
            for name, g in generators.items()}
    times: dict[str, list[float]] = {name: [] for name in modes}
    tokens = 0
    for repeat in range(args.repeats):
        for name, g in generators.items():
            seconds, tokens, _ = rollout(g, prompts, observations, args.new_tokens, False, args.seed + repeat)
            times[name].append(seconds)
    # Tokens run through the model before each turn's first sample: the new blocks, or whole histories.
    history = [len(p) for p in prompts]
    prefill = {"reuse_cache": sum(history), "re_encode": sum(history)}
    for obs in observations:
        history = [h + args.new_tokens + len(o) for h, o in zip(history, obs)]
        prefill["reuse_cache"] += sum(1 + len(o) for o in obs)
        prefill["re_encode"] += sum(history)
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "runs": len(t),
                   "tokens_per_s": tokens / statistics.median(t), "prefill_tokens": prefill[name]}
            for name, t in times.items()}
    return {
        "model": {"hidden_size": args.hidden, "layers": args.layers, "heads": args.heads,
                  "kv_heads": args.kv_heads, "vocab": len(tokenizer),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "rollout": {"batch": args.batch, "turns": args.turns, "new_tokens_per_turn": args.new_tokens,
                    "prompt_tokens_mean": statistics.mean(map(len, prompts)),
                    "observation_tokens_mean": statistics.mean(len(b) for o in observations for b in o),
                    "sampled_tokens": tokens, "temperature": 1.0},
        "results": rows,
        "speedup": rows["re_encode"]["median_s"] / rows["reuse_cache"]["median_s"],
        "identical_greedy_tokens": warm["reuse_cache"] == warm["re_encode"],
        "threads": torch.get_num_threads(),
    }


def print_kv_reuse(result: dict[str, Any]) -> None:
    """The ``kv_reuse`` section as a table."""
    from rich.console import Console
    from rich.table import Table

    r = result["rollout"]
    table = Table(title=f"multi-turn rollout: batch {r['batch']}, {r['turns']} turns x {r['new_tokens_per_turn']} "
                        f"tokens, prompt ~{r['prompt_tokens_mean']:.0f}, observations "
                        f"~{r['observation_tokens_mean']:.0f} ({result['threads']} threads)")
    for col in ("mode", "median s", "min s", "runs", "sampled tokens/s", "prefill tokens"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for name, row in result["results"].items():
        table.add_row(name, f"{row['median_s']:.3f}", f"{row['min_s']:.3f}", str(row["runs"]),
                      f"{row['tokens_per_s']:.0f}", str(row["prefill_tokens"]))
    Console().print(table)
    print(f"KV reuse speedup: {result['speedup']:.2f}x; greedy tokens identical: "
          f"{result['identical_greedy_tokens']}")


#: Sections of the benchmark: name -> (measure(args) -> JSON-able dict, print(result)).
def measure_step_split(args: argparse.Namespace) -> dict[str, Any]:
    """The time split of RL steps of configs/spider-tiny.yaml: generate / execute / reward+credit / train.

    One warm-up step (model build, schema reads, caches) is run and left out; the next ``--steps`` are
    summed. The non-model share is (execute + reward+credit) over the whole step; target: under 10%.
    """
    import tempfile

    from finestep.train.config import load_train_config
    from finestep.train.rl import RLTrainer

    config = load_train_config(
        Path(__file__).resolve().parents[1] / "configs" / "spider-tiny.yaml", [f"trainer.max_steps={args.steps + 1}"]
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = RLTrainer(config, run_dir)
        trainer.train_step()
        steps = [trainer.train_step() for _ in range(args.steps)]
        trainer.log.close()
    keys = ("time_generate", "time_execute", "time_reward_credit", "time_train")
    totals = {key[5:]: sum(m[key] for m in steps) for key in keys}
    whole = sum(m["time_step"] for m in steps)
    return {
        "config": "configs/spider-tiny.yaml",
        "steps": args.steps,
        "seconds": totals,
        "step_seconds": whole,
        "share": {name: value / whole for name, value in totals.items()},
        "non_model_share": (totals["execute"] + totals["reward_credit"]) / whole,
        "target_non_model_share": 0.10,
    }


def print_step_split(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"one RL step of {result['config']} ({result['steps']} steps after a warm-up)")
    for column in ("part", "seconds", "share"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for name, seconds in result["seconds"].items():
        table.add_row(name, f"{seconds:.3f}", f"{100 * result['share'][name]:.1f}%")
    table.add_row("non-model (execute + reward/credit)", "", f"{100 * result['non_model_share']:.1f}% (target < 10%)")
    Console().print(table)


SECTIONS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "kv_reuse": (measure_kv_reuse, print_kv_reuse),
    "step_split": (measure_step_split, print_step_split),
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections, merge their results into the JSON file, print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=sorted(SECTIONS), default=sorted(SECTIONS),
                        help="which parts to run (the others keep their previous results in the JSON file)")
    parser.add_argument("--steps", type=int, default=3, help="step_split: RL steps measured after one warm-up")
    parser.add_argument("--batch", type=int, default=16, help="sequences in the rollout")
    parser.add_argument("--turns", type=int, default=4, help="assistant turns per sequence")
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens sampled per turn (fixed length)")
    parser.add_argument("--prompt-tokens", type=int, default=300, help="mean prompt length (+-10%%)")
    parser.add_argument("--obs-tokens", type=int, default=60, help="mean observation block length (+-25%%)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode, interleaved (median)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden size of the tiny model")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the tiny model")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--kv-heads", type=int, default=2, help="key/value heads (grouped-query attention)")
    parser.add_argument("--vocab", type=int, default=2048, help="tokenizer vocabulary target")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model, the synthetic data and sampling")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON result file")
    args = parser.parse_args(argv)

    import torch

    from finestep.atomic import atomic_write_json

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {}
    if args.out.is_file():
        try:
            result = json.loads(args.out.read_text())
        except json.JSONDecodeError:
            result = {}
    for name in args.sections:
        measure, show = SECTIONS[name]
        result[name] = measure(args)
        show(result[name])
    result["benchmark"] = "rollout_speed"
    result["environment"] = {"python": platform.python_version(), "torch": torch.__version__,
                             "machine": platform.machine(), "processor": platform.processor() or platform.machine()}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

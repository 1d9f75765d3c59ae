"""Completions of a trained sequence model for a prompt typed as text, with their rewards.

    purejaxrl-lab sample runs/grpo --prompt "12+34=" [--num 4] [--temperature 1.0] [--seed I]

The greedy completion first, then `num` sampled ones, each with the task's verifier reward
(and its partial credit).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str  # the completion, EOS spelled <eos>
    reward: float  # the verifier's: 1 exact, else 0
    partial: float  # the fraction of the answer's positions right
    greedy: bool


def sample(run_dir: str | Path, prompt: str, seed: int = 0, num: int = 4, temperature: float = 1.0,
           setting: int | None = None) -> tuple[str, list[Completion]]:
    """(the answer, completions): the greedy completion of `prompt` by seed `seed` of the saved
    run, then `num` sampled at `temperature`. Raises ValueError for a run that is not a
    sequence model or a prompt the task cannot read."""
    import envs
    from agents.common import sequence as S
    from envs import token_tasks
    from purejaxrl_lab.checkpoint import load_policy
    from purejaxrl_lab.grid import split

    policy = load_policy(run_dir, seed=seed, setting=setting)
    env, env_params = envs.make(policy.env)
    env_params = env_params.replace(**{**policy.env_params, **split(policy.setting)[1]})
    model_config = getattr(policy.config, "model", None)
    if not token_tasks.is_token_task(env) or model_config is None:
        raise ValueError(f"run_dir={str(run_dir)!r} is not allowed: it holds a {policy.agent} run "
                         f"on {policy.env}, not a sequence model on a token task")
    if isinstance(num, bool) or num < 0:
        raise ValueError(f"num={num!r} is not allowed: expected an integer >= 0")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} is not allowed: expected a number > 0")
    prompt_tokens, target = env.parse_prompt(prompt, env_params)
    model = S.TaskModel(model_config, env, env_params, value_head="value" in policy.params["params"])
    prompts = jnp.asarray(np.tile(prompt_tokens, (num + 1, 1)))
    greedy = jnp.arange(num + 1) == 0

    @jax.jit
    def run(params, key):
        out = jax.vmap(lambda p, g, k: model.generate(params, k, p[None], temperature=temperature,
                                                      greedy=g).completions[0])(
            prompts, greedy, jax.random.split(key, num + 1))
        return out, jax.vmap(env.correctness, in_axes=(0, None))(out, jnp.asarray(target))

    completions, (exact, partial) = run(policy.params, jax.random.key(seed))
    rows = [Completion(token_tasks.decode(c), float(e), float(p), i == 0)
            for i, (c, e, p) in enumerate(zip(np.asarray(completions), np.asarray(exact),
                                              np.asarray(partial)))]
    return token_tasks.decode(target), rows

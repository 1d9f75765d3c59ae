"""Planning agents (AlphaZero, MuZero): the issue's targets, printed as tables.

    python benchmarks/planning.py tictactoe --seeds 2      # AlphaZero vs perfect and random play
    python benchmarks/planning.py connectfour --seeds 1    # AlphaZero vs random and MCTS-200
    python benchmarks/planning.py catch --seeds 10         # AlphaZero and MuZero, eval >= 0.9 when
    python benchmarks/planning.py throughput               # self-play moves and simulations per s

`tictactoe` and `connectfour` train the agent's preset through `lab.run` (evaluation off),
then play each seed's greedy search (`eval_simulations`, no Gumbel noise) against the
opponents of the board game's single-agent view, `games` games moving first and as many
moving second. `catch` trains with an evaluation after every chunk (20 episodes per seed) and
reports the first env step count at which each seed's evaluation return is >= 0.9 and stays
there. `throughput` times self-play alone (search and the environment's step, no learning)
for 1 and 8 seeds vmapped, and the whole training loop through `lab.run`. One JAX CPU device
per core (`purejaxrl_lab.use_cpu_cores()`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import purejaxrl_lab as lab

lab.use_cpu_cores(quiet=True)  # one JAX CPU device per core, as the CLI does

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import agents  # noqa: E402
import envs  # noqa: E402
from purejaxrl_lab.evaluation import run_episodes  # noqa: E402


def seed_params(results, i):
    return jax.tree.map(lambda x: x[i], results.final_state.params)


def games_against(agent_name: str, config, env_id: str, params, opponent: str, first: int,
                  games: int, seed: int, **opponent_params) -> dict:
    """Results of `games` games of the greedy search against `opponent`, the agent moving
    first (first=1) or second (0)."""
    module = agents.get(agent_name)
    env, env_params = envs.make(env_id, opponent=opponent, agent_first=first, **opponent_params)
    agent = module.make(config, env, env_params)
    returns = jax.jit(lambda p, k: run_episodes(k, agent.act, p, env, env_params, games,
                                                module.ACT_INPUT, True).returns)(
        params, jax.random.key(1000 + seed))
    returns = np.asarray(returns)
    return {"wins": int((returns > 0).sum()), "draws": int((returns == 0).sum()),
            "losses": int((returns < 0).sum())}


def board_game(agent_name: str, preset: str, env_id: str, seeds: int, games: int,
               opponents: list[tuple[str, dict]], overrides: dict | None = None) -> None:
    from agents.common.config import with_overrides

    module = agents.get(agent_name)
    config = with_overrides(module.PRESETS[preset], overrides or {})
    if overrides:
        print(f"preset {preset} with {overrides}")
    t = time.time()
    results = lab.run(agent_name, config, env_id, seeds=seeds, eval_every=0, progress=True)
    print(f"{agent_name} preset {preset} on {env_id}: {seeds} seed(s) x {config.total_timesteps:,} "
          f"moves in {results.run_time:.0f} s (compile {results.compile_time:.0f} s; "
          f"{time.time() - t:.0f} s in all); evaluation: {config.eval_simulations} simulations, "
          f"no Gumbel noise\n")
    print("| seed | opponent | agent moves | wins | draws | losses |")
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    for i in range(seeds):
        params = seed_params(results, i)
        for opponent, extra in opponents:
            for first in (1, 0):
                t = time.time()
                r = games_against(agent_name, config, env_id, params, opponent, first, games, i,
                                  **extra)
                name = opponent + (f"-{extra['opponent_simulations']}" if extra else "")
                print(f"| {i} | {name} | {'first' if first else 'second'} | {r['wins']} | "
                      f"{r['draws']} | {r['losses']} |  ({time.time() - t:.0f} s)", flush=True)


def catch(seeds: int) -> None:
    print("| agent | preset env steps | seeds >= 0.9 at the end | env steps to >= 0.9 (per seed, "
          "staying) | run s |")
    print("| --- | ---: | ---: | --- | ---: |")
    for name in ("alphazero", "muzero"):
        config = agents.get(name).PRESETS["catch"]
        results = lab.run(name, config, "Catch-bsuite", seeds=seeds, num_chunks=10, eval_every=1,
                          eval_episodes=20, progress=False)
        ev = np.asarray(results.metrics["eval_return"])  # [seed, evaluation]
        steps = results.eval_units  # env steps per seed at each evaluation
        reach = []
        for row in ev:
            ok = row >= 0.9
            stays = [j for j in range(len(row)) if ok[j:].all()]
            reach.append(f"{int(steps[stays[0]]):,}" if stays else "never")
        print(f"| {name} | {config.total_timesteps:,} | {(ev[:, -1] >= 0.9).sum()}/{seeds} | "
              f"{', '.join(reach)} | {results.run_time:.0f} |", flush=True)


def self_play_rate(agent_name: str, preset: str | None, env_id: str, seeds: int,
                   moves: int = 32) -> dict:
    """Self-play alone: `moves` moves of the config's `num_envs` games per seed, each chosen by
    search with `num_simulations` (Gumbel noise on), vmapped over seeds; the second call timed."""
    module = agents.get(agent_name)
    config = module.PRESETS[preset] if preset else module.Config()
    env, env_params = envs.make(env_id)
    from agents.common.planning import self_play_params

    play_params = self_play_params(env_params)
    agent = module.make(config, env, env_params)

    def play(key):
        state = agent.init(key)

        def move(env_state, key):
            key_act, key_step = jax.random.split(key)
            action = agent.act(state.params, env_state, key_act)
            _, env_state, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key_step, config.num_envs), env_state, action, play_params)
            return env_state, None

        env_state, _ = jax.lax.scan(move, state.env_state, jax.random.split(key, moves))
        return env_state

    run = jax.jit(jax.vmap(play))
    keys = jax.random.split(jax.random.key(0), seeds)
    t = time.time()
    jax.block_until_ready(run(keys))
    compile_s = time.time() - t
    t = time.time()
    jax.block_until_ready(run(keys))
    seconds = time.time() - t
    n = seeds * config.num_envs * moves
    return {"moves_per_s": n / seconds, "sims_per_s": n * config.num_simulations / seconds,
            "compile_s": compile_s, "config": config}


def throughput(seed_counts: list[int]) -> None:
    cases = [("alphazero", "tictactoe", "TicTacToe-v0"), ("alphazero", "connectfour", "ConnectFour-v0"),
             ("alphazero", "catch", "Catch-bsuite"), ("muzero", "catch", "Catch-bsuite"),
             ("muzero", "cartpole", "CartPole-v1")]
    print("| agent (preset) | env | games x simulations | seeds | self-play moves/s | "
          "simulations/s | training env steps/s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, preset, env_id in cases:
        for seeds in seed_counts:
            r = self_play_rate(name, preset, env_id, seeds)
            c = r["config"]
            import dataclasses

            short = dataclasses.replace(c, total_timesteps=c.units_per_iteration * 8)
            train = lab.run(name, short, env_id, seeds=seeds, num_chunks=2, eval_every=0,
                            progress=False)
            print(f"| {name} ({preset}) | {env_id} | {c.num_envs} x {c.num_simulations} | {seeds} | "
                  f"{r['moves_per_s']:,.0f} | {r['sims_per_s']:,.0f} | {train.throughput:,.0f} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["tictactoe", "connectfour", "catch", "throughput"])
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--games", type=int, default=100, help="games per opponent and side")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                        help="config fields replacing the preset's (tictactoe, connectfour)")
    args = parser.parse_args()
    from purejaxrl_lab.grid import parse_items, parse_number

    overrides = {k: parse_number(v) for k, v in parse_items(args.set, "--set", "NAME=VALUE",
                                                             "random_opening_moves=3").items()}
    print(f"{jax.devices()[0].platform} x{jax.device_count()}, jax {jax.__version__}\n")
    if args.task == "tictactoe":
        board_game("alphazero", "tictactoe", "TicTacToe-v0", args.seeds or 2, args.games,
                   [("perfect", {}), ("random", {})], overrides)
    elif args.task == "connectfour":
        board_game("alphazero", "connectfour", "ConnectFour-v0", args.seeds or 1, args.games,
                   [("random", {}), ("mcts", {"opponent_simulations": 200})], overrides)
    elif args.task == "catch":
        catch(args.seeds or 10)
    else:
        throughput([1, 8] if args.seeds is None else [args.seeds])


if __name__ == "__main__":
    main()

"""Play a trained agent at a board game in the terminal, and render its self-play games.

    purejaxrl-lab play RUN_DIR [--seed I] [--first human|agent] [--simulations N]
    purejaxrl-lab render RUN_DIR --out game.svg [--seed I] [--simulations N]

`play_game` and `render_game` are the same in Python; `play_game` reads entries from any
`read` callable and writes to any stream, so a game can be scripted.

The board is drawn from the observation planes of the player to move (plane 0 that player's
pieces, plane 1 the other's), the first mover's pieces as X and the second's as O; empty
cells show the move that fills them (TicTacToe: the cell number; ConnectFour: the column
numbers above the board; Othello and Go: coordinates, column letter and row number, "d3").
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import jax
import numpy as np

PLAYABLE = ("TicTacToe-v0", "ConnectFour-v0", "Othello-v0", "Go9x9-v0")
"""Board games with a text board (`play`); `render` works for every pgx game."""
FIRST = ("human", "agent")
COLUMNS = "abcdefghjklmnopqrst"
"""Column letters of the Othello and Go boards (Go's convention: no "i")."""


class PlayError(ValueError):
    """Bad input to play or render (the CLI prints it as one line, exit status 2)."""


@dataclasses.dataclass
class Opponent:
    """A trained policy at a board game: `move(state)` is its greedy move."""

    env_id: str
    env: Any
    env_params: Any
    move: Callable[[Any], int]
    agent: str


def load_opponent(run_dir: str | Path, seed: int = 0, simulations: int | None = None,
                  games: tuple[str, ...] = PLAYABLE, setting: int | None = None) -> Opponent:
    """The greedy policy of seed `seed` (and sweep setting index `setting`) of the run in
    `run_dir`, checked to be a board game's (`games`). `simulations` replaces a search
    agent's `eval_simulations`."""
    import envs
    from purejaxrl_lab.checkpoint import load_policy

    if simulations is not None and (isinstance(simulations, bool) or not isinstance(simulations, int)
                                    or simulations < 1):
        raise PlayError(f"simulations={simulations!r} is not allowed: expected an integer >= 1")
    path = Path(run_dir)
    if not path.is_dir():
        raise PlayError(f"run_dir={str(run_dir)!r} is not allowed: no such directory")
    try:
        policy = load_policy(path, seed=seed, setting=setting)
    except (FileNotFoundError, OSError, KeyError) as e:
        raise PlayError(f"run_dir={str(run_dir)!r} is not allowed: {e}") from None
    except ValueError as e:
        raise PlayError(str(e)) from None
    if policy.env not in games:
        raise PlayError(f"run_dir={str(run_dir)!r} is not allowed: its agent was trained on "
                        f"{policy.env}, and this needs a board game: {', '.join(games)}")
    return opponent_from_policy(policy, simulations)


def opponent_from_policy(policy, simulations: int | None = None) -> Opponent:
    """An `Opponent` from a trained `Policy` (`lab.load_policy(...)`, `results.policy(i)`) of
    a board game; `simulations` replaces a search agent's `eval_simulations`."""
    import envs

    if policy.env not in envs.board_games.GAMES:
        raise PlayError(f"policy: trained on {policy.env}, not on a board game "
                        f"({', '.join(envs.board_games.GAMES)})")
    env, params = envs.make(policy.env)
    params = params.replace(**_run_env_params(policy, params))  # the two-player game
    act = policy.act
    if simulations is not None:
        if not hasattr(policy.config, "eval_simulations"):
            raise PlayError(f"simulations={simulations} is not allowed: the run's agent "
                            f"({policy.agent}) does not search; leave it out")
        from purejaxrl_lab.plan import module_of

        module = module_of(policy.agent)
        config = dataclasses.replace(policy.config, eval_simulations=simulations)
        act = module.make(config, env, params).act
    jitted = jax.jit(lambda state, key: act(policy.params, state if policy.act_input == "env_state"
                                            else state.observation, key, True))
    key = jax.random.key(policy.seed)

    def move(state) -> int:
        return int(jitted(state, key))

    return Opponent(policy.env, env, params, move, policy.agent)


def _run_env_params(policy, params) -> dict:
    """The run's recorded environment parameters of the two-player game (not its opponent's)."""
    opponent = ("opponent", "opponent_simulations", "agent_first")
    return {k: v for k, v in policy.env_params.items() if hasattr(params, k) and k not in opponent}


# ------------------------------------------------------------------------------ the board


def move_name(env_id: str, action: int, num_actions: int, width: int) -> str:
    """How the board names a move: "4" (TicTacToe cell, ConnectFour column), "d3", "pass"."""
    if env_id in ("TicTacToe-v0", "ConnectFour-v0"):
        return str(action)
    if action == num_actions - 1:
        return "pass"
    row, col = divmod(action, width)
    return f"{COLUMNS[col]}{row + 1}"


def parse_move(env_id: str, text: str, num_actions: int, width: int) -> int | None:
    """The action of an entry (a move name, or an action number), None if it names none."""
    text = text.strip().lower()
    for action in range(num_actions):
        if move_name(env_id, action, num_actions, width) == text:
            return action
    if re.fullmatch(r"\d+", text) and int(text) < num_actions:
        return int(text)
    return None


def board_text(env_id: str, state, first_player: int) -> str:
    """The position as text, X the first mover's pieces and O the second's."""
    obs = np.asarray(state.observation)
    height, width = obs.shape[:2]
    mover = int(state.current_player)
    mine, theirs = ("X", "O") if mover == first_player else ("O", "X")

    def cell(r, c):
        if obs[r, c, 0] > 0:
            return mine
        if obs[r, c, 1] > 0:
            return theirs
        if env_id == "TicTacToe-v0":
            return str(r * width + c)
        return "."

    rows = [" ".join(cell(r, c) for c in range(width)) for r in range(height)]
    if env_id == "ConnectFour-v0":
        return "\n".join([" ".join(str(c) for c in range(width)), *rows])
    if env_id == "TicTacToe-v0":
        return "\n".join(rows)
    return "\n".join(["   " + " ".join(COLUMNS[:width])]
                     + [f"{r + 1:>2} {row}" for r, row in enumerate(rows)])


def legal_moves(env_id: str, state) -> list[str]:
    mask = np.asarray(state.legal_action_mask)
    width = state.observation.shape[1]
    return [move_name(env_id, a, mask.shape[-1], width) for a in np.flatnonzero(mask)]


# ------------------------------------------------------------------------------ play


def _step(env, params, key):
    """The game's move without gymnax's auto-reset (the final position stays)."""
    from envs import transition

    return jax.jit(lambda s, a: transition(env, key, s, a, params))


def play_game(opponent: Opponent, first: str = "human", seed: int = 0,
              read: Callable[[str], str] = input, out: TextIO | None = None) -> float | None:
    """One game of a human (entries from `read(prompt)`) against `opponent`.

    Returns the human's result (+1 win, 0 draw, -1 loss), or None when the input ends (EOF)
    before the game does. A bad or illegal entry is answered with a message and a new prompt.
    `out`: where the board and messages go (default: sys.stdout).
    """
    import jax.numpy as jnp

    out = sys.stdout if out is None else out
    if first not in FIRST:
        from envs import unknown_name_error

        raise PlayError(str(unknown_name_error("first", first, list(FIRST))))
    env, params, env_id = opponent.env, opponent.env_params, opponent.env_id
    key = jax.random.key(seed)
    _, state = env.reset(key, params)
    step = _step(env, params, key)
    first_player = int(state.current_player)
    human = first_player if first == "human" else 1 - first_player
    num_actions = env.action_space(params).n
    width = state.observation.shape[1]
    marks = {first_player: "X", 1 - first_player: "O"}
    print(f"{env_id}: you play {marks[human]}, the agent ({opponent.agent}) plays "
          f"{marks[1 - human]}; X moves first.", file=out)
    while True:
        print(board_text(env_id, state, first_player), file=out)
        mover = int(state.current_player)
        if mover == human:
            moves = legal_moves(env_id, state)
            while True:
                try:
                    entry = read(f"your move ({', '.join(moves)}): ")
                except EOFError:
                    print("\nno more input: the game is left unfinished", file=out)
                    return None
                action = parse_move(env_id, entry, num_actions, width)
                if action is None:
                    print(f"{entry.strip()!r} is not a move; enter one of: {', '.join(moves)}",
                          file=out)
                elif not bool(state.legal_action_mask[action]):
                    print(f"{move_name(env_id, action, num_actions, width)} is not legal here; "
                          f"legal moves: {', '.join(moves)}", file=out)
                else:
                    break
        else:
            action = opponent.move(state)
            print(f"the agent plays {move_name(env_id, action, num_actions, width)}", file=out)
        _, state, _, terminated, truncated, info = step(state, jnp.int32(action))
        if bool(terminated) or bool(truncated):
            print(board_text(env_id, state, first_player), file=out)
            if not bool(terminated):
                print(f"the game was cut after {int(state.time)} moves (max_steps_in_episode)",
                      file=out)
                return 0.0
            result = float(info["rewards"][human])
            print({1.0: "you win", 0.0: "a draw", -1.0: "the agent wins"}.get(
                result, f"result {result:+g} for you"), file=out)
            return result


# ------------------------------------------------------------------------------ render


def render_game(opponent: Opponent, out: str | Path, seed: int = 0,
                frame_seconds: float = 0.5) -> Path:
    """Writes the agent's greedy self-play game from the start position of `seed`: an animated
    SVG (`.svg`, pgx's renderer) or the final position as PNG (`.png`, needs cairosvg)."""
    import jax.numpy as jnp
    import pgx

    out = Path(out)
    if out.suffix.lower() not in (".svg", ".png"):
        raise PlayError(f"out={str(out)!r} is not allowed: the file name must end in .svg or .png")
    if out.suffix.lower() == ".png":
        try:
            import cairosvg
        except ImportError:
            raise PlayError("out: a .png needs the cairosvg package (pip install cairosvg); "
                            "write .svg instead") from None
    env, params = opponent.env, opponent.env_params
    key = jax.random.key(seed)
    _, state = env.reset(key, params)
    step = _step(env, params, key)
    games = [state.game]
    while True:
        _, state, _, terminated, truncated, _ = step(state, jnp.int32(opponent.move(state)))
        games.append(state.game)
        if bool(terminated) or bool(truncated):
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".svg":
        pgx.save_svg_animation(games, out, frame_duration_seconds=frame_seconds)
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            svg = Path(tmp) / "position.svg"
            pgx.save_svg(games[-1], svg)
            cairosvg.svg2png(url=str(svg), write_to=str(out))
    return out

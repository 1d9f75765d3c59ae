"""`purejaxrl-lab play` and `render`: a scripted game against a trained AlphaZero (bad and
illegal entries answered with a new prompt), the entry point driven through stdin in a
subprocess, the rendered SVG, and bad input (one line, exit 2)."""

import os
import subprocess
import sys
import tempfile

import jax
import pytest

import envs
from purejaxrl_lab import cli
from purejaxrl_lab import play as P

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="pjl-cache-")}
TINY = ["--total-timesteps", "48", "--num-envs", "4", "--num-steps", "4", "--num-simulations",
        "4", "--eval-simulations", "8", "--buffer-size", "64", "--batch-size", "8",
        "--gradient-steps", "2", "--hidden-sizes", "16", "--num-chunks", "1", "--eval-every", "0",
        "--no-progress", "--no-compilation-cache"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny AlphaZero run on TicTacToe-v0 (1 seed), saved."""
    out = tmp_path_factory.mktemp("ttt") / "run"
    assert cli.main(["train", "alphazero", "--env", "TicTacToe-v0", "--seeds", "1", "--out",
                     str(out), *TINY]) == 0
    return out


def scripted(entries):
    it = iter(entries)

    def read(prompt):
        print(prompt, end="")
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


def test_a_scripted_game_with_bad_and_illegal_entries(run_dir, capsys):
    opponent = P.load_opponent(run_dir)
    assert opponent.env_id == "TicTacToe-v0" and opponent.agent == "alphazero"
    # The human (X) moves first: "x" is not a move, then 4; the agent takes a cell; "4" again
    # is illegal; then cells 0..8 in turn, each taken or refused until the game ends.
    result = P.play_game(opponent, "human", read=scripted(["x", "4", "4", *map(str, range(9))]))
    out = capsys.readouterr().out
    assert "'x' is not a move; enter one of: 0, 1, 2, 3, 4, 5, 6, 7, 8" in out
    assert "4 is not legal here; legal moves:" in out
    assert out.splitlines()[1:4] == ["0 1 2", "3 4 5", "6 7 8"]  # the empty board
    assert "3 X 5" in out  # the human's X in the centre
    assert result in (1.0, 0.0, -1.0)
    assert out.strip().endswith({1.0: "you win", 0.0: "a draw", -1.0: "the agent wins"}[result])
    # The input ends before the game: no result, a message.
    assert P.play_game(opponent, "agent", read=scripted([])) is None
    assert "no more input" in capsys.readouterr().out


def test_play_through_stdin_in_a_subprocess(run_dir):
    # The agent moves first; the human's entries: a bad one, then every cell in turn.
    entries = "\n".join(["hello", *map(str, range(9))]) + "\n"
    p = subprocess.run([sys.executable, "-m", "purejaxrl_lab", "play", str(run_dir), "--first",
                        "agent", "--simulations", "16"], input=entries, capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "the agent plays" in p.stdout and "'hello' is not a move" in p.stdout
    assert any(p.stdout.strip().endswith(r) for r in ("you win", "a draw", "the agent wins"))
    assert "Traceback" not in p.stderr


def test_render_writes_an_animated_svg(run_dir, tmp_path, capsys):
    out = tmp_path / "game.svg"
    assert cli.main(["render", str(run_dir), "--out", str(out)]) == 0
    text = out.read_text()
    # One frame per position (pgx animates them with CSS): the start and at least 5 moves.
    assert text.lstrip().startswith("<?xml") and "@keyframes" in text and "#_fr5{" in text


def test_board_text_of_othello_and_connect_four():
    env, params = envs.make("Othello-v0")
    _, state = env.reset(jax.random.key(0), params)
    first = int(state.current_player)
    _, state, *_ = env.step(jax.random.key(0), state, P.parse_move("Othello-v0", "d3", 65, 8),
                            params)
    # The first mover (X) played d3 and turned d4 over: X on d3, d4, e4, d5; O on e5.
    assert P.board_text("Othello-v0", state, first).splitlines()[3:7] == [
        " 3 . . . X . . . .", " 4 . . . X X . . .", " 5 . . . X O . . .", " 6 . . . . . . . ."]
    assert P.legal_moves("Othello-v0", state) == ["c3", "e3", "c5"]
    assert P.parse_move("Othello-v0", "pass", 65, 8) == 64
    assert P.parse_move("Othello-v0", "z9", 65, 8) is None
    env, params = envs.make("ConnectFour-v0")
    _, state = env.reset(jax.random.key(0), params)
    first = int(state.current_player)
    _, state, *_ = env.step(jax.random.key(0), state, 3, params)
    lines = P.board_text("ConnectFour-v0", state, first).splitlines()
    assert lines[0] == "0 1 2 3 4 5 6" and lines[-1] == ". . . X . . ."


def _one_line_error(capsys, *args):
    status = cli.main(list(map(str, args)))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("purejaxrl-lab: error:"), err
    return lines[0]


def test_bad_input(run_dir, tmp_path, capsys):
    assert "no such directory" in _one_line_error(capsys, "play", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no complete checkpoint" in _one_line_error(capsys, "play", tmp_path / "empty")
    assert "simulations=0 is not allowed" in _one_line_error(capsys, "play", run_dir,
                                                             "--simulations", "0")
    assert "unknown first 'robot'; allowed: agent, human" in _one_line_error(
        capsys, "play", run_dir, "--first", "robot")
    assert "seed=3 is not allowed: the run's seeds are [0]" in _one_line_error(
        capsys, "play", run_dir, "--seed", "3")
    assert "must end in .svg or .png" in _one_line_error(capsys, "render", run_dir, "--out",
                                                         tmp_path / "game.gif")

"""The planning and RLHF notebooks, run top to bottom (apart from tests/test_notebook.py so that
the two test workers share the notebooks)."""

from .test_notebook import execute


def test_planning_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    nb, out, text = execute("planning.ipynb", "planning", tmp_path, monkeypatch,
                            PLANNING_SCALE="0.002",  # 1 iteration of TicTacToe, 2 of Catch
                            PLANNING_SEEDS="2")
    assert (out / "game.svg").is_file() and (out / "muzero_catch.png").is_file()
    assert "| perfect | second |" in text and "MuZero on Catch: final eval return per seed" in text
    displays = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "display_data"]
    assert any("image/svg+xml" in o.get("data", {}) for o in displays)


def test_rlhf_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    _, out, text = execute("rlhf.ipynb", "rlhf", tmp_path, monkeypatch,
                           RLHF_SCALE="0.005",  # a few iterations of every stage
                           RLHF_SMALL="1",  # 1-digit addition, a 1-layer model of width 32
                           RLHF_SEEDS="2")
    assert (out / "rl" / "curves.png").is_file() and (out / "reward_hacking.png").is_file()
    for line in ("SFT held-out accuracy per seed", "GRPO: final held-out accuracy", "reward model:",
                 "PPO-RLHF: verifier reward", "DPO: held-out preference accuracy", "kl_coef 0.0:",
                 "answer: 7"):
        assert line in text, line

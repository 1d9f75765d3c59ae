from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "quickstart.ipynb"


def execute(name: str, prefix: str, tmp_path, monkeypatch, **env):
    """Runs notebooks/`name` with `env` set and TMPDIR in tmp_path; checks it was saved without
    outputs and wrote nowhere else. Returns (the executed notebook, its output directory
    `prefix`-*, the text of its streams)."""
    nb = nbformat.read(NOTEBOOK.parent / name, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    for key, value in {**env, "TMPDIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    work = tmp_path / "cwd"
    work.mkdir()
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    assert not any(work.iterdir()), "the notebook writes nowhere but its temporary directory"
    (out,) = tmp_path.glob(f"{prefix}-*")
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    return nb, out, text


def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    monkeypatch.setenv("QUICKSTART_TIMESTEPS", "4096")
    monkeypatch.setenv("QUICKSTART_SEEDS", "2")
    monkeypatch.setenv("QUICKSTART_RENDER_STEPS", "20")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    work = tmp_path / "cwd"
    work.mkdir()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    assert not any(work.iterdir()), "the notebook writes nowhere but its temporary directory"
    (out,) = tmp_path.glob("quickstart-*")
    assert (out / "curve.png").is_file() and (out / "sweep.png").is_file() and (out / "episode.gif").is_file()
    streams = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"]
    text = "".join(o.get("text", "") for o in streams)
    assert "final return mean" in text and "IQM final return" in text and "mean return" in text
    assert "over 10 episodes in Gymnasium's CartPole-v1" in text
    # Progress is one display updated in place, not a stream of bar redraws on stderr.
    assert not any(o.get("name") == "stderr" and "it/s" in o.get("text", "") for o in streams)
    displays = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "display_data"]
    assert any("iterations" in str(o.get("data", {}).get("text/plain", "")) for o in displays)
    assert any("image/gif" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_off_policy_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    _, out, text = execute("off_policy.ipynb", "off-policy", tmp_path, monkeypatch,
                           OFF_POLICY_SCALE="0.004",  # 2000 CartPole steps, 80 Pendulum steps
                           OFF_POLICY_SEEDS="2", OFF_POLICY_RENDER_STEPS="10")
    assert (out / "cartpole" / "curves.png").is_file() and (out / "sac.png").is_file()
    assert (out / "pendulum.gif").is_file()
    assert "DQN: final eval return" in text and "PQN: final eval return" in text


def test_fundamentals_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    _, out, text = execute("fundamentals.ipynb", "fundamentals", tmp_path, monkeypatch,
                           FUNDAMENTALS_RUNS="40",  # 40 runs per setting
                           FUNDAMENTALS_SCALE="0.1")  # 100 bandit rounds, 2000 cliff steps
    for name in ("figure_2_2.png", "figures_2_3_to_2_5.png", "example_6_6.png", "figure_8_2.png"):
        assert (out / name).is_file(), name
    for line in ("epsilon 0.1: last 10% of steps", "thompson: cumulative regret", "policy iteration agrees: True",
                 "sarsa: sum of rewards per episode", "n = 50: steps in episode 10", "linucb: cumulative regret"):
        assert line in text, line


def test_tpu_notebook_shards_a_sweep_over_8_devices(tmp_path, monkeypatch):
    """The Colab/Kaggle TPU case, on 8 simulated CPU devices: the sweep's 16 runs are sharded
    over all 8, and the throughput of 8 devices and of 1 is printed."""
    _, out, text = execute("tpu.ipynb", "tpu", tmp_path, monkeypatch, JAX_NUM_CPU_DEVICES="8",
                           TPU_SCALE="0.001",  # one iteration of 64 x 128 steps per run
                           TPU_SEEDS="2")
    assert (out / "sweep.png").is_file()
    assert "devices: 8 x cpu (cpu)" in text and "devices used: 8; runs in the program: 16" in text
    assert "1 device: " in text and " env steps/s; 8 devices: " in text


def test_every_notebook_has_colab_and_kaggle_badges_and_installs_from_the_repository():
    import tomllib

    repository = tomllib.loads((NOTEBOOK.parent.parent / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    slug = repository.removeprefix("https://github.com/")
    for path in sorted(NOTEBOOK.parent.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        head, install = nb.cells[0].source, nb.cells[1].source
        where = f"blob/main/notebooks/{path.name}"
        assert f"(https://colab.research.google.com/github/{slug}/{where})" in head, path.name
        assert f"(https://kaggle.com/kernels/welcome?src={repository}/{where})" in head, path.name
        assert f'REPOSITORY = "{repository}"' in install and "git+{REPOSITORY}" in install, path.name

"""Drawing environment states as RGB images, on the host, after a run.

    draw = envs.render.renderer("CartPole-v1", env, params)
    frame = draw(state)            # uint8 [height, width, 3]
    draw.close()

Classic control and toy text are drawn by Gymnasium's own renderers (the state copied into
Gymnasium's environment, `envs.interop.set_twin_state`), MinAtar, Catch, Pong and gymnax's grid
worlds by gymnax's renderers (`gymnax.visualize`), the Dyna maze by a small matplotlib grid.
Board games are drawn by pgx as SVG (`purejaxrl_lab.play.render_game`); token tasks are text.
Nothing here runs inside a compiled program.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from envs.interop import GYMNASIUM_IDS

# gymnax's renderers (module, init, update) by environment name.
_GYMNAX = {
    **{name: ("vis_minatar", "init_minatar", "update_minatar")
       for name in ("Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
                    "SpaceInvaders-MinAtar", "Pong-misc")},
    "Catch-bsuite": ("vis_catch", "init_catch", "update_catch"),
    "FourRooms-misc": ("vis_maze", "init_maze", "update_maze"),
    "MetaMaze-misc": ("vis_maze", "init_maze", "update_maze"),
}
# gymnax's update functions that take the parameters too.
_UPDATE_WITH_PARAMS = {"update_minatar"}


def drawable_ids() -> list[str]:
    """The environment ids `renderer` draws."""
    return sorted([*GYMNASIUM_IDS, *_GYMNAX, "DynaMaze-v0"])


def frames_per_second(env_id: str) -> int:
    """The frame rate an episode of `env_id` is shown at: 30 for classic control (Gymnasium's),
    5 for grid worlds, games and toy text."""
    from envs.tabular import ENVIRONMENTS as TABULAR

    return 30 if env_id in GYMNASIUM_IDS and env_id not in TABULAR else 5


def drawable(env_id: str) -> bool:
    """Whether `renderer` can draw states of `env_id` as images."""
    return env_id in drawable_ids()


class Renderer:
    """`renderer(...)`: call it with a state for a frame; `close()` frees what it holds."""

    def __init__(self, draw: Callable[[Any], np.ndarray], close: Callable[[], None] = lambda: None):
        self._draw, self._close = draw, close

    def __call__(self, state) -> np.ndarray:
        frame = np.asarray(self._draw(state))
        return np.ascontiguousarray(frame[..., :3]).astype(np.uint8)

    def close(self) -> None:
        self._close()


def renderer(env_id: str, env, params) -> Renderer:
    """A `Renderer` of the states of `env` (registered as `env_id`) with parameters `params`.

    Raises:
      ValueError: the environment cannot be drawn as an image (`drawable` is False).
    """
    if env_id in GYMNASIUM_IDS:
        return _gymnasium_renderer(env_id, params)
    if env_id in _GYMNAX:
        return _gymnax_renderer(env_id, env, params)
    if env_id == "DynaMaze-v0":
        return _grid_renderer(env, params)
    raise ValueError(f"env: {env_id} cannot be drawn as an image; environments that can: "
                     f"{', '.join(drawable_ids())}")


def _gymnasium_renderer(env_id: str, params) -> Renderer:
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame: no sound or display needed
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    from envs.interop import gymnasium_twin, set_twin_state

    twin = gymnasium_twin(env_id, params, render_mode="rgb_array")
    twin.reset(seed=0)

    def draw(state):
        set_twin_state(twin, env_id, state)
        return twin.render()

    return Renderer(draw, twin.close)


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=80)
    return fig, fig.add_subplot()


def _pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def _gymnax_renderer(env_id: str, env, params) -> Renderer:
    import importlib

    module_name, init_name, update_name = _GYMNAX[env_id]
    module = importlib.import_module(f"gymnax.visualize.{module_name}")
    init, update = getattr(module, init_name), getattr(module, update_name)
    fig, ax = _figure()
    handle = None

    def draw(state):
        nonlocal handle
        if handle is None:
            handle = init(ax, env, state, params)
            fig.tight_layout()
        elif update_name in _UPDATE_WITH_PARAMS:
            update(handle, env, state, params)
        else:
            handle = update(handle, env, state)
        return _pixels(fig)

    return Renderer(draw)


def _grid_renderer(env, params) -> Renderer:
    """A maze of `envs.tabular.DynaMaze`: walls dark, the goal green, the agent red."""
    from envs.tabular import DYNA_MAZE

    rows, cols = len(DYNA_MAZE), len(DYNA_MAZE[0])
    base = np.ones((rows, cols, 3))
    for r, line in enumerate(DYNA_MAZE):
        for c, ch in enumerate(line):
            if ch == "#":
                base[r, c] = (0.25, 0.25, 0.25)
            elif ch == "G":
                base[r, c] = (0.3, 0.8, 0.3)
    fig, ax = _figure()
    ax.set_xticks([])
    ax.set_yticks([])
    image = ax.imshow(base, interpolation="none")
    fig.tight_layout()

    def draw(state):
        r, c = divmod(int(state.state), cols)
        grid = base.copy()
        grid[r, c] = (0.85, 0.2, 0.2)
        image.set_data(grid)
        return _pixels(fig)

    return Renderer(draw)

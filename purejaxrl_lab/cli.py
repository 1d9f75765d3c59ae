"""Command line: `purejaxrl-lab COMMAND ...` (`python -m purejaxrl_lab` is the same).

    purejaxrl-lab train AGENT --env ID --seeds N [--out DIR] [--resume DIR] [--<config field> V]
    purejaxrl-lab sweep AGENT --env ID --seeds N --grid learning_rate=1e-3,3e-4 ent_coef=0,0.01
    purejaxrl-lab plot DIR [DIR ...]
    purejaxrl-lab play RUN_DIR [--seed I] [--first human|agent] [--simulations N]
    purejaxrl-lab render RUN_DIR --out episode.gif|episode.mp4|game.svg|episode.txt
    purejaxrl-lab eval RUN_DIR [--seed I] [--gymnasium ID] [--episodes N] [--json]
    purejaxrl-lab sample RUN_DIR --prompt "12+34=" [--num N] [--temperature T]
    purejaxrl-lab list

Options are parsed by tyro from the agent's own Config dataclass (its field docstrings are
the --help text; nested fields as --model.num-layers). Bad input prints one line and
exits with status 2, before anything is compiled. `main(argv)` runs a command in-process.
"""


import contextlib
import dataclasses
import io
import os
import re
import secrets
import sys
import time
import types
import typing
import warnings
from pathlib import Path

SUMMARY = """purejaxrl-lab: train reinforcement-learning agents over many seeds and settings as one
compiled JAX program, with statistics, plots, checkpoints and evaluation.

commands:
  train AGENT   train one configuration over N seeds; results, plot and checkpoints in --out
  sweep AGENT   train every setting of --grid x N seeds in one compiled program; a ranking
  plot DIR...   learning curves and final-score intervals of saved runs and sweeps, compared
  play RUN      play a board game against a trained agent in the terminal
  render RUN    write a greedy episode as GIF/MP4 (a board game's self-play as SVG, a token
                task's as text)
  eval RUN      the mean return of a saved policy with a 95% CI and every episode, in the
                project's environment or in Gymnasium's own (--gymnasium)
  sample RUN    completions of a trained sequence model for a prompt, with their rewards
  list          the agents (unit, score, presets) and environments (discrete or continuous)

usage: purejaxrl-lab train AGENT [--env ID] [--env-param NAME=VALUE ...] [--seeds N]
                           [--out DIR] [--preset NAME] [--resume DIR] [--eval-every K]
                           [--stop-on-nan] [--<config field> VALUE ...]
       purejaxrl-lab sweep AGENT --grid NAME=V1,V2 [NAME=V1,V2 ...] [train's options]
       purejaxrl-lab plot DIR [DIR ...] [--out DIR] [--statistic iqm|mean|median]
                          [--metric NAME] [--smoothing K] [--mixed-envs]
       purejaxrl-lab play RUN_DIR [--seed I] [--setting J] [--first human|agent] [--simulations N]
       purejaxrl-lab render RUN_DIR [--out episode.gif|.mp4|game.svg|.txt] [--seed I] [--setting J]
                            [--fps N] [--max-steps N] [--simulations N]
       purejaxrl-lab eval RUN_DIR [--seed I] [--setting J] [--episodes N] [--gymnasium ID]
                          [--eval-seed K] [--sample] [--json]
       purejaxrl-lab sample RUN_DIR --prompt TEXT [--num N] [--temperature T] [--seed I]
       purejaxrl-lab list
       purejaxrl-lab train AGENT --help     (every option, with its meaning)
       purejaxrl-lab --version

AGENT is a registered name (`purejaxrl-lab list`) or an importable module path
(my_package.my_agent) following the agent contract (agents.common.contract)."""

COMMANDS = ["train", "sweep", "plot", "play", "render", "eval", "sample", "list"]


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("purejaxrl-lab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- options


def _args_type(config_cls, command: str = "train"):
    import tyro

    from purejaxrl_lab.runtime import DEFAULT_CACHE_DIR

    @dataclasses.dataclass(frozen=True)
    class TrainArgs:
        config: typing.Annotated[config_cls, tyro.conf.arg(name="")]  # type: ignore[valid-type]
        """Agent configuration."""
        env: str = "CartPole-v1"
        """Environment id (`purejaxrl-lab list` shows them)."""
        env_param: tuple[str, ...] = ()
        """NAME=VALUE environment parameters, e.g. opponent=random (a board game against a
        fixed opponent) or max_steps_in_episode=200; recorded with the results."""
        seeds: int = 8
        """Number of seeds (0..N-1), trained together in one compiled program."""
        out: str | None = None
        """Results directory (new, or holding no results). Default: a new runs/AGENT-ENV-TIME-XXXXXXXX."""
        preset: str | None = None
        """Named configuration of the agent to start from (see `purejaxrl-lab list`)."""
        progress: bool = True
        """Show progress."""
        num_chunks: int = 20
        """Chunks the run is cut into: the unit of logging, evaluation and checkpointing."""
        eval_every: int | None = None
        """Evaluate the greedy policy every this many chunks and at the end (default: about 10
        evaluations per run; 0: never)."""
        eval_episodes: int = 10
        """Fresh episodes per evaluation."""
        checkpoint_every: int = 5
        """Checkpoint into OUT/checkpoints every this many chunks and at the end (0: never)."""
        stop_on_nan: bool = False
        """Stop at most one chunk after any run's metrics go NaN or infinite; the results
        so far are saved (and a checkpoint where it stopped). Without it the run goes on, and
        the console and summary name the runs and the iteration where they diverged."""
        resume: str | None = None
        """Continue the run in this results directory from its newest checkpoint; options
        default to the checkpointed run's, and results are written there."""
        devices: int | None = None
        """Devices to shard the runs over (default: as many as hold two runs each, up to all;
        on a CPU-only machine there is one device per core)."""
        log: tuple[str, ...] = ("jsonl",)
        """Log sinks: jsonl (OUT/log.jsonl), tensorboard (OUT/tensorboard), wandb (offline)."""
        compilation_cache: bool = True
        """Use JAX's persistent compilation cache, so a second identical run skips compiling."""
        cache_dir: str = str(DEFAULT_CACHE_DIR)
        """Where the compilation cache lives."""
        coordinator_address: str | None = None
        """Multi-host: address:port of process 0 (or set JAX_COORDINATOR_ADDRESS)."""
        num_processes: int | None = None
        """Multi-host: number of processes (or JAX_NUM_PROCESSES)."""
        process_id: int | None = None
        """Multi-host: this process's index (or JAX_PROCESS_ID)."""
        distributed: bool = False
        """Multi-host: let JAX detect the cluster (SLURM, Cloud TPU); detected anyway when the
        job has several processes."""

    if command == "train":
        return TrainArgs

    @dataclasses.dataclass(frozen=True)
    class SweepArgs(TrainArgs):
        grid: tuple[str, ...] = ()
        """NAME=V1,V2,... items: tunable hyperparameters or env.<param>, run as a cartesian grid."""

    return SweepArgs


def _own_options(config_cls, command: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(_args_type(config_cls, command)) if f.name != "config"]


def _config_fields(config_cls, prefix: str = "") -> list[tuple[str, typing.Any]]:
    """(dotted name, type) of every leaf field of a (nested) config class."""
    out = []
    for name, kind in typing.get_type_hints(config_cls).items():
        if typing.get_origin(kind) is typing.ClassVar:
            continue
        if dataclasses.is_dataclass(kind):
            out += _config_fields(kind, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", kind))
    return out


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _check_collisions(config_cls, command: str) -> None:
    own = {f.name for f in _own_options(config_cls, command)}
    clash = sorted(own & {n for n, _ in _config_fields(config_cls)})
    if clash:
        raise UsageError(f"the agent's Config has field(s) {', '.join(clash)}, which the CLI uses for "
                         f"its own options; rename them in the agent")


def _known_flags(config_cls, command: str) -> dict[str, typing.Any]:
    """--option -> its type: the CLI's own options and the config's (nested) fields."""
    hints = typing.get_type_hints(_args_type(config_cls, command))
    known = {_flag(f.name): hints[f.name] for f in _own_options(config_cls, command)}
    known.update({_flag(n): kind for n, kind in _config_fields(config_cls)})
    known.update({"no-" + k: bool for k, kind in list(known.items()) if kind is bool})
    known["help"] = bool
    return known


def _check_flags(argv: list[str], known: dict, command: str) -> None:
    from envs import close_matches

    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        name = _flag(name)
        if name not in known:
            hits = close_matches(name, list(known))
            hint = ("; closest: " + ", ".join("--" + h for h in hits)) if hits else ""
            raise UsageError(f"unknown option --{name}{hint} (see `purejaxrl-lab {command} AGENT --help`)")
        if known[name] is bool and name != "help":
            given = value if eq else (argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None)
            if given is not None:
                base = name.removeprefix("no-")
                raise UsageError(f"--{name} takes no value, got {given!r}: write --{base} or --no-{base}")


def _integral_values(argv: list[str], known: dict) -> list[str]:
    """`--total-timesteps 1e5` -> `--total-timesteps 100000`: integer options take integral
    numbers in any notation."""
    def is_int(kind):
        return kind is int or (typing.get_origin(kind) in (typing.Union, types.UnionType)
                               and int in typing.get_args(kind))

    out = list(argv)
    for i, arg in enumerate(out):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        if not is_int(known.get(_flag(name))):
            continue
        j = i if eq else i + 1
        text = value if eq else (out[j] if j < len(out) else "")
        try:
            number = float(text)
        except ValueError:
            continue
        if number.is_integer() and not re.fullmatch(r"[+-]?\d+", text.strip()):
            out[j] = f"--{name}={int(number)}" if eq else str(int(number))
    return out


def _tyro_message(text: str) -> str:
    """The substance of a tyro error box, on one line."""
    text = text.split("Argument helptext", 1)[0]
    lines = [re.sub(r"[│╭╮╰╯─━┃┏┓┗┛]+|-{3,}", " ", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line != "Unrecognized options"]  # the box title
    skip = ("usage", "for full helptext", "value error", "parsing error")
    lines = [line for line in lines if line and not line.lower().startswith(skip)]
    msg = re.sub(r"\s+", " ", " ".join(lines)).strip()
    msg = re.sub(r"^Error parsing config: ", "", msg)
    return msg or "invalid arguments (see --help)"


def _tyro(args_type, argv: list[str], default=None, prog: str = ""):
    """tyro.cli, with --help printed (exit 0) and errors as one-line UsageErrors."""
    import tyro

    if "-h" in argv or "--help" in argv:
        with contextlib.suppress(SystemExit):
            tyro.cli(args_type, args=argv, default=default, prog=prog)
        return None
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(args_type, args=argv, default=default, prog=prog)
    except SystemExit:
        raise UsageError(_tyro_message(captured.getvalue())) from None
    except ValueError as e:  # a Config.__post_init__ check
        raise UsageError(str(e)) from None


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of --name V / --name=V in argv (last one wins), without parsing the rest."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _preset(module, argv: list[str]):
    value = _flag_value(argv, "preset")
    if value is None:
        return module.Config()
    from envs import unknown_name_error

    if value not in module.PRESETS:
        raise UsageError(str(unknown_name_error("preset", value, list(module.PRESETS))))
    return module.PRESETS[value]


# --------------------------------------------------------------------------- train and sweep


def _early_setup(argv: list[str]) -> None:
    """Joins a multi-host job, then gives JAX one CPU device per core, before anything
    (gymnax included) touches a device."""
    from purejaxrl_lab import runtime

    try:
        address = _flag_value(argv, "coordinator-address")
        num = _flag_value(argv, "num-processes")
        pid = _flag_value(argv, "process-id")
        runtime.initialize_distributed(address, None if num is None else int(num),
                                       None if pid is None else int(pid),
                                       auto="--distributed" in argv)
    except ValueError as e:
        raise UsageError(str(e)) from None
    runtime.use_cpu_cores(quiet=True)


def _resume_dir(argv: list[str]) -> Path | None:
    """The results directory of --resume DIR (DIR or DIR/checkpoints), checked."""
    value = _flag_value(argv, "resume")
    if value is None:
        return None
    path = Path(value)
    if not path.is_dir():
        raise UsageError(f"resume={value!r} is not allowed: no such directory")
    if path.name == "checkpoints" and not (path / "checkpoints").is_dir():
        path = path.parent
    if not (path / "checkpoints").is_dir():
        raise UsageError(f"resume={value!r} is not allowed: it holds no checkpoints/ (not a "
                         f"results directory written with checkpointing)")
    if (path / "summary.json").exists():
        import json

        stopped = json.loads((path / "summary.json").read_text()).get("stopped")
        if stopped:
            raise UsageError(f"resume={value!r} is not allowed: that run stopped after "
                             f"{stopped['iteration']} of {stopped['of']} iterations ({stopped['reason']}) "
                             f"and its results are in {path}; its last checkpoint is there to inspect "
                             f"(purejaxrl_lab.load_policy)")
        raise UsageError(f"resume={value!r} is not allowed: that run is complete; its results "
                         f"are in {path}")
    return path


def _resume_meta(path: Path) -> dict:
    from purejaxrl_lab import checkpoint

    store = checkpoint.Checkpoints(path / "checkpoints")
    try:
        step = store.latest()
        if step is None:
            raise UsageError(f"resume={str(path)!r} is not allowed: it holds no complete checkpoint")
        return store.meta(step)
    finally:
        store.close()


def _agent(command: str, argv: list[str]):
    import agents

    if not argv or argv[0].startswith("-"):
        raise UsageError(f"{command} needs an AGENT, one of: {', '.join(agents.available())} "
                         f"(or an importable module path)")
    try:
        return agents.get(argv[0])
    except ValueError as e:
        raise UsageError(str(e)) from None


def _parse(command: str, argv: list[str]):
    """-> (agent name, module, parsed options, checkpoint meta when resuming, resume dir)."""
    from agents.common.config import config_from_dict

    module = _agent(command, argv)
    _check_collisions(module.Config, command)
    known = _known_flags(module.Config, command)
    rest = argv[1:]
    _check_flags(rest, known, command)
    rest = _integral_values(rest, known)
    args_type = _args_type(module.Config, command)
    resume = _resume_dir(rest)
    meta = None if resume is None else _resume_meta(resume)
    if meta is not None:  # options default to the checkpointed run's
        if meta["agent"] != argv[0]:
            raise UsageError(f"resume: the checkpoint is of agent {meta['agent']!r}, not {argv[0]!r}")
        if bool(meta["settings"]) != (command == "sweep"):
            kind = "sweep" if meta["settings"] else "train"
            raise UsageError(f"resume: the checkpoint is of a {kind} run; use `purejaxrl-lab {kind}`")
        try:
            config = config_from_dict(module.Config, meta["config"])
        except ValueError as e:
            raise UsageError(f"resume: {e}") from None
        chunk_len = meta["chunk_length"]
        default = args_type(config=config, env=meta["env"], seeds=len(meta["seeds"]),
                            num_chunks=meta["num_chunks"],
                            eval_every=meta["evaluation"]["every_iterations"] // chunk_len,
                            eval_episodes=meta["evaluation"]["episodes"])
    else:
        default = args_type(config=_preset(module, rest))
    args = _tyro(args_type, rest, default=default, prog=f"purejaxrl-lab {command} {argv[0]}")
    return argv[0], module, args, meta, resume


def _out_dir(name: str, args) -> Path:
    """The results directory of a new run: --out (new, or without results), or a fresh
    runs/AGENT-ENV-TIME-XXXXXXXX that no other run can have."""
    import jax

    from purejaxrl_lab.checkpoint import holds_checkpoints

    if args.out is None:
        if jax.process_count() > 1:
            raise ValueError("a run of several processes needs --out DIR, a directory on a file "
                             "system every process shares")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{name.rsplit('.', 1)[-1]}-{args.env}-{stamp}-{secrets.token_hex(4)}"
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} is a file; choose a new directory")
    if (out / "summary.json").exists():
        raise ValueError(f"out={str(out)!r} already holds a finished run's results; choose a new "
                         f"directory (existing results are never overwritten)")
    if holds_checkpoints(out / "checkpoints"):
        raise ValueError(f"out={str(out)!r} already holds a run's checkpoints; --resume {out} "
                         f"continues that run, or choose a new directory")
    return out


def parse_env_params(items) -> dict[str, object]:
    """`["opponent=random", "agent_first=1"]` -> {"opponent": "random", "agent_first": 1}:
    numbers where they parse as numbers, else strings."""
    from purejaxrl_lab import grid as grid_lib

    def value(text):
        try:
            return grid_lib.parse_number(text)
        except ValueError:
            return text

    items = grid_lib.parse_items(items, "--env-param", "NAME=VALUE", "opponent=random")
    return {name: value(text) for name, text in items.items()}


def _env(env_id: str, items, meta):
    """What the run is given as its environment: the id alone, or (env, params) with the
    --env-param values over the defaults (resuming: over the checkpoint's parameters)."""
    import envs

    from purejaxrl_lab.checkpoint import env_params_dict, json_ready

    values = parse_env_params(items)
    if meta is not None and meta["env"] == env_id:
        saved = meta["env_params"]
        if values or json_ready(saved) != json_ready(env_params_dict(envs.make(env_id)[1])):
            values = {**saved, **values}
    return envs.make(env_id, **values) if values else env_id


def _run(command: str, argv: list[str]) -> int:
    """`train` and `sweep`: check everything, claim the output directory (refused while another
    live run holds it), then compile, run, save, report."""
    _early_setup(argv)
    from agents.common import ContractError
    from purejaxrl_lab import claims, loggers, runtime
    from purejaxrl_lab import grid as grid_lib
    from purejaxrl_lab import plan as plan_lib
    from purejaxrl_lab import runner

    if argv and argv[0] in ("-h", "--help"):
        print(SUMMARY)
        return 0
    name, module, args, meta, resume = _parse(command, argv)
    if args is None:  # --help was printed
        return 0
    main_process = runtime.is_main_process()
    try:
        sweep_kwargs = {}
        if command == "sweep":
            if args.grid:
                sweep_kwargs = {"grid": grid_lib.parse_cli(args.grid), "sweep": True}
            elif meta is not None:  # resuming: the checkpoint's settings, in their order
                sweep_kwargs = {"settings": meta["settings"], "sweep": True}
            else:
                raise ValueError("sweep needs --grid NAME=V1,V2 ... (e.g. --grid learning_rate=1e-3,3e-4)")
        loggers.check_sinks(args.log)
        if isinstance(args.checkpoint_every, bool) or args.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every={args.checkpoint_every} is not allowed: expected an "
                             f"integer >= 0 (0: no checkpoints)")
        if resume is not None:
            if args.out is not None and Path(args.out).absolute() != resume.absolute():
                raise ValueError(f"out={args.out!r} is not allowed with resume={str(resume)!r}: "
                                 f"a resumed run writes its results where it was")
            out = resume
            seeds = meta["seeds"] if args.seeds == len(meta["seeds"]) else args.seeds
        else:
            out = _out_dir(name, args)
            seeds = args.seeds
        checkpoints = out / "checkpoints" if args.checkpoint_every > 0 else None
        env = _env(args.env, args.env_param, meta)
        plan = plan_lib.prepare(
            module, args.config, env, seeds, num_chunks=args.num_chunks, devices=args.devices,
            checkpoint_dir=checkpoints if resume is None else None,
            checkpoint_every=max(1, args.checkpoint_every),
            resume=out / "checkpoints" if resume is not None else None,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes,
            stop_on_nan=args.stop_on_nan, **sweep_kwargs)
        if resume is not None and args.checkpoint_every == 0:
            plan = dataclasses.replace(plan, checkpoint_dir=None)
        if args.compilation_cache:
            runtime.enable_compilation_cache(args.cache_dir)
        claim = claims.claim_on_main(out)  # before any work is done
    except ValueError as e:
        raise UsageError(str(e)) from None

    try:
        sinks = (loggers.make(args.log, out, config=dataclasses.asdict(plan.config), run_name=out.name,
                              step_name=plan.config.unit.replace(" ", "_")) if main_process else [])
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                results = runner.execute(plan, progress=args.progress, loggers=sinks)
        except ContractError as e:  # found in the traced programs: the agent's fault, not the input's
            raise UsageError(str(e)) from None
        finally:
            for sink in sinks:
                sink.close()
        if not main_process:
            return 0
        results.save(out)
        plot = results.plot(out / "curve.png")
        for metric in getattr(plan.module, "PLOT_METRICS", ()):
            results.plot(out / f"curve_{metric}.png", metric=metric,
                         statistic=getattr(plan.module, "PLOT_STATISTIC", "iqm"))
    finally:
        if claim is not None:
            claim.release()
    print()
    print(results.table())
    print(f"\nresults: {out}/ (summary.json, metrics.jsonl, metrics.npz, params.npz"
          + (", checkpoints/" if plan.checkpoint_dir is not None else "") + ")")
    extra = [f"curve_{m}.png" for m in getattr(plan.module, "PLOT_METRICS", ())]
    print(f"plot:    {plot}" + (f" (and {', '.join(extra)})" if extra else ""))
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning during a run as one line on stderr (no source line)."""
    print(f"purejaxrl-lab: warning: {message}", file=sys.stderr if file is None else file)


# --------------------------------------------------------------------------- plot and list


def plot(argv: list[str]) -> int:
    import tyro

    @dataclasses.dataclass(frozen=True)
    class PlotArgs:
        dirs: typing.Annotated[tuple[str, ...], tyro.conf.Positional]
        """Results directories of runs or sweeps to compare."""
        out: str = "plots"
        """Where curves.png and final_scores.png are written (created if missing)."""
        statistic: str = "iqm"
        """Across seeds: iqm, mean or median."""
        metric: str | None = None
        """The metric the curves show (default: the agents' score, e.g. episode_return)."""
        smoothing: int = 1
        """Average each seed's curve over this many points (1: none)."""
        mixed_envs: bool = False
        """Allow overlaying runs on different environments."""

    args = _tyro(PlotArgs, argv, prog="purejaxrl-lab plot")
    if args is None:
        return 0
    from purejaxrl_lab import plots, results

    if not args.dirs:
        raise UsageError("plot needs one or more results dirs: purejaxrl-lab plot DIR [DIR ...]")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"out={args.out!r} is a file; choose a directory for the figures")
    if args.statistic not in ("iqm", "mean", "median"):
        from envs import unknown_name_error

        raise UsageError(str(unknown_name_error("statistic", args.statistic, ["iqm", "mean", "median"])))
    loaded = []
    for d in args.dirs:
        try:
            loaded.append(results.load(d))
        except (FileNotFoundError, OSError, ValueError, KeyError) as e:
            raise UsageError(f"plot: {d!r}: {e}") from None
    names = _short_names(args.dirs)
    try:
        paths = plots.compare(loaded, names, args.out, statistic=args.statistic, metric=args.metric,
                              smoothing=args.smoothing, allow_mixed_envs=args.mixed_envs)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from None
    for r, n in zip(loaded, names):
        print(f"{n}: {r.agent} on {r.env}, {len(r.seeds)} seeds"
              + (f", {len(r.settings)} settings" if hasattr(r, "settings") else ""))
    for p in paths:
        print(f"wrote {p}")
    return 0


def play(argv: list[str], command: str = "play", read=input) -> int:
    """`play` and `render`: a human against a trained agent, or the agent's self-play game."""
    import tyro

    @dataclasses.dataclass(frozen=True)
    class GameArgs:
        run_dir: typing.Annotated[str, tyro.conf.Positional]
        """Results directory of a run on a board game (saved results or checkpoints)."""
        seed: int = 0
        """Which of the run's seeds plays (and the start position's key)."""
        setting: int | None = None
        """For a sweep: the index of the setting that plays."""
        simulations: int | None = None
        """Search simulations per agent move (default: the run's eval_simulations)."""

    @dataclasses.dataclass(frozen=True)
    class PlayArgs(GameArgs):
        first: str = "human"
        """Who moves first: human or agent."""

    @dataclasses.dataclass(frozen=True)
    class RenderArgs(GameArgs):
        out: str | None = None
        """The file written: .gif or .mp4 (a greedy episode of the policy of --seed, from the
        reset of key --seed; default episode.gif), .svg (a board game's self-play, animated;
        its default game.svg) or .png (its final position; needs cairosvg), .txt (a token
        task's episode; its default episode.txt)."""
        fps: int | None = None
        """Frames per second of a GIF or MP4 (default: 30 for classic control, else 5)."""
        max_steps: int | None = None
        """Stop the episode after this many steps (default: the environment's time limit)."""

    args = _tyro(PlayArgs if command == "play" else RenderArgs, argv,
                 prog=f"purejaxrl-lab {command}")
    if args is None:
        return 0
    from purejaxrl_lab import play as P

    try:
        if command == "play":
            if args.first not in P.FIRST:
                from envs import unknown_name_error

                raise UsageError(str(unknown_name_error("first", args.first, list(P.FIRST))))
            opponent = P.load_opponent(args.run_dir, args.seed, args.simulations,
                                       setting=args.setting)
            result = P.play_game(opponent, args.first, args.seed, read=read)
            return 0 if result is not None else 1
        import envs

        env_id = _run_env(args.run_dir)
        if env_id not in envs.board_games.GAMES:
            return _render_episode(args, env_id)
        for name in ("fps", "max_steps"):
            if getattr(args, name) is not None:
                raise UsageError(f"{name}: a board game's self-play is written as an SVG that plays "
                                 f"every move; {name} is for episodes written as GIF or MP4")
        opponent = P.load_opponent(args.run_dir, args.seed, args.simulations,
                                   games=tuple(envs.board_games.GAMES), setting=args.setting)
        print(f"wrote {P.render_game(opponent, args.out or 'game.svg', args.seed)}")
        return 0
    except P.PlayError as e:
        raise UsageError(str(e)) from None


def _run_env(run_dir: str) -> str | None:
    """The environment id a saved run trained on."""
    from purejaxrl_lab.checkpoint import run_record

    try:
        record, _ = run_record(Path(run_dir))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"run_dir: {e}") from None
    return record.get("env")


def _render_episode(args, env_id: str | None) -> int:
    from envs.token_tasks import TASK_CLASSES
    from purejaxrl_lab.video import render_episode

    for name in ("fps", "max_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{name}={value} is not allowed: expected an integer >= 1")
    if args.simulations is not None:
        raise UsageError("simulations: only a board game's self-play searches; this run is not on one")
    try:
        default = "episode.txt" if env_id in TASK_CLASSES else "episode.gif"
        path = render_episode(args.run_dir, args.out or default, args.seed, args.setting,
                              episode_seed=args.seed, fps=args.fps, max_steps=args.max_steps)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(f"wrote {path}")
    return 0


def evaluate(argv: list[str]) -> int:
    """`eval`: a saved policy's mean return with a 95% CI and a per-episode table."""
    import json

    import tyro

    @dataclasses.dataclass(frozen=True)
    class EvalArgs:
        run_dir: typing.Annotated[str, tyro.conf.Positional]
        """Results directory of a run (saved results or checkpoints)."""
        seed: int = 0
        """Which of the run's seeds is evaluated."""
        setting: int | None = None
        """For a sweep: the index of the setting."""
        episodes: int = 100
        """Fresh episodes."""
        gymnasium: str | None = None
        """Run the episodes in Gymnasium's own implementation of the run's environment, e.g.
        CartPole-v1 (classic control, FrozenLake, CliffWalking, Taxi)."""
        eval_seed: int = 0
        """Seed of the evaluation's resets and sampled actions (Gymnasium: episode i is reset
        with eval_seed + i)."""
        sample: bool = False
        """Sample actions from the policy instead of acting greedily."""
        json: bool = False
        """Print one JSON object (for scripts) instead of the table."""

    args = _tyro(EvalArgs, argv, prog="purejaxrl-lab eval")
    if args is None:
        return 0
    if args.episodes < 1:
        raise UsageError(f"episodes={args.episodes} is not allowed: expected an integer >= 1")
    from purejaxrl_lab.evaluation import evaluate as run_evaluation

    try:
        result = run_evaluation(args.run_dir, episodes=args.episodes, seed=args.eval_seed,
                                policy_seed=args.seed, setting=args.setting,
                                deterministic=not args.sample,
                                gymnasium=args.gymnasium)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps({"run_dir": args.run_dir, "seed": args.seed, "setting": args.setting,
                          "deterministic": not args.sample, **result.to_dict()}))
        return 0
    print(f"{args.run_dir}: seed {args.seed}" + (f", setting {args.setting}" if args.setting is not None else "")
          + f", {'sampled' if args.sample else 'greedy'} actions, {result.env}")
    print(f"{'episode':>8} {'return':>12} {'length':>8}")
    for i, (ret, length) in enumerate(zip(result.returns, result.lengths)):
        print(f"{i:>8} {ret:>12.4g} {int(length):>8}")
    print(result)
    return 0


def sample(argv: list[str]) -> int:
    """`sample`: completions of a trained sequence model for a prompt, with their rewards."""
    import tyro

    @dataclasses.dataclass(frozen=True)
    class SampleArgs:
        run_dir: typing.Annotated[str, tyro.conf.Positional]
        """Results directory of a sequence agent's run (sft, grpo, dpo, ...)."""
        prompt: str
        """The prompt as text: "12+34=" (Addition), the list's digits "31412" (Sort, Reverse)."""
        num: int = 4
        """Sampled completions besides the greedy one."""
        temperature: float = 1.0
        """Sampling temperature."""
        seed: int = 0
        """Which of the run's seeds answers (and the sampling key)."""
        setting: int | None = None
        """For a sweep: the index of the setting."""

    args = _tyro(SampleArgs, argv, prog="purejaxrl-lab sample")
    if args is None:
        return 0
    from purejaxrl_lab.sample import sample as sample_run

    try:
        answer, rows = sample_run(args.run_dir, args.prompt, args.seed, args.num, args.temperature,
                                  args.setting)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    print(f"prompt {args.prompt!r}, answer {answer}")
    for row in rows:
        kind = "greedy" if row.greedy else f"T={args.temperature:g}"
        print(f"  {kind:>8}  {row.text:<12} reward {row.reward:g}  partial credit {row.partial:.2f}")
    return 0


def _short_names(dirs) -> list[str]:
    names = [Path(d).resolve().name for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def list_all() -> int:
    import agents
    import envs
    from gymnax.environments import spaces

    from purejaxrl_lab.plan import ENV_KIND_NAMES, env_kind

    print("agents:")
    width = max(map(len, agents.available()))
    for name in agents.available():
        module = agents.get(name)
        config, score = module.Config(), module.SCORE
        presets = ", ".join(sorted(module.PRESETS)) or "none"
        direction = "higher" if score.higher_is_better else "lower"
        print(f"  {name:<{width}} counts {config.unit}; scored by {score.metric} ({direction} is better); "
              f"presets: {presets}")
    print("environments (actions):")
    for env_id in envs.registered():
        env, params = envs.make(env_id)
        space = env.action_space(params)
        kind = (f"discrete, {space.n}" if isinstance(space, spaces.Discrete)
                else f"continuous, shape {tuple(space.shape)}" if isinstance(space, spaces.Box)
                else type(space).__name__)
        special = env_kind(env)
        print(f"  {env_id:<26} {kind}" + (f" ({ENV_KIND_NAMES[special]})" if special else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns the exit status (2 for bad input, with one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(SUMMARY)
            return 0 if argv else 2
        if argv[0] == "--version":
            print(f"purejaxrl-lab {_version()}")
            return 0
        command, rest = argv[0], argv[1:]
        if command in ("train", "sweep"):
            return _run(command, rest)
        if command == "plot":
            return plot(rest)
        if command in ("play", "render"):
            return play(rest, command)
        if command == "eval":
            return evaluate(rest)
        if command == "sample":
            return sample(rest)
        if command == "list":
            if rest:
                raise UsageError(f"list takes no arguments, got {' '.join(rest)!r}")
            return list_all()
        from envs import unknown_name_error

        raise UsageError(str(unknown_name_error("command", command, COMMANDS)))
    except UsageError as e:
        print(f"purejaxrl-lab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("purejaxrl-lab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output was piped into a command that stopped reading (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141

"""Command line:

    purejaxrl-lab train AGENT --env ID --seeds N [--out DIR] [--resume DIR] [--<config field> V]
    purejaxrl-lab sweep AGENT --env ID --seeds N --grid learning_rate=1e-3,3e-4 ent_coef=0,0.01
    purejaxrl-lab plot DIR [DIR ...]
    purejaxrl-lab list

Options are parsed by tyro from the agent's own Config dataclass (its field
docstrings are the --help text). Bad input prints one line and exits with
status 2, before anything is compiled.
"""


import contextlib
import dataclasses
import io
import re
import sys
import time
from pathlib import Path

USAGE = """usage: purejaxrl-lab train AGENT [--env ID] [--seeds N] [--out DIR] [--preset NAME]
                           [--resume DIR] [--<config field> VALUE ...]
       purejaxrl-lab sweep AGENT --grid NAME=V1,V2 [NAME=V1,V2 ...] [train's options]
       purejaxrl-lab plot DIR [DIR ...] [--out DIR] [--statistic iqm|mean|median]
       purejaxrl-lab list
       purejaxrl-lab train AGENT --help     (every option, with its meaning)"""


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def _args_type(config_cls, command: str = "train"):
    import tyro

    from purejaxrl_lab.runtime import DEFAULT_CACHE_DIR

    @dataclasses.dataclass(frozen=True)
    class TrainArgs:
        config: tyro.conf.OmitArgPrefixes[config_cls]  # type: ignore[valid-type]
        """Agent configuration."""
        env: str = "CartPole-v1"
        """Environment id (`purejaxrl-lab list` shows them)."""
        seeds: int = 8
        """Number of seeds (0..N-1), trained together in one compiled program."""
        out: str | None = None
        """Results directory (new, or holding no results). Default: runs/AGENT-ENV-TIMESTAMP."""
        preset: str | None = None
        """Named configuration of the agent to start from (see `purejaxrl-lab list`)."""
        progress: bool = True
        """Show a progress bar."""
        num_chunks: int = 20
        """Chunks the run is cut into: checkpoint opportunities; progress updates after each call
        of 1-4 chunks (about a second's worth)."""
        checkpoint_every: int = 5
        """Checkpoint into OUT/checkpoints every this many chunks and at the end (0: never)."""
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


def _known_flags(config_cls, command: str) -> list[str]:
    """Every --option `train` accepts: TrainArgs' own fields, the config's fields, --no-<bool>."""
    own = [f for f in dataclasses.fields(_args_type(config_cls, command)) if f.name != "config"]
    fields = own + list(dataclasses.fields(config_cls))
    names = [f.name.replace("_", "-") for f in fields]
    bools = [f.name.replace("_", "-") for f in fields if f.type in (bool, "bool")]
    return names + ["no-" + b for b in bools] + ["help"]


def _check_flags(argv: list[str], config_cls, command: str) -> None:
    from envs import close_matches

    known = _known_flags(config_cls, command)
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("_", "-")
        if name not in known:
            hits = close_matches(name, known)
            hint = ("; closest: " + ", ".join("--" + h for h in hits)) if hits else ""
            raise UsageError(f"unknown option --{name}{hint} (see `purejaxrl-lab {command} AGENT --help`)")


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


def _preset(module, argv: list[str]):
    value = _flag_value(argv, "preset")
    if value is None:
        return module.Config()
    from envs import unknown_name_error

    presets = getattr(module, "PRESETS", {})
    if value not in presets:
        raise UsageError(str(unknown_name_error("preset", value, list(presets))))
    return presets[value]


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of --name V / --name=V in argv (last one wins), without parsing the rest."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _early_distributed(argv: list[str]) -> None:
    """Joins a multi-host job before anything (gymnax included) touches a device."""
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


def _resume_meta(argv: list[str]) -> dict | None:
    """The checkpointed run's identity when --resume DIR is given (its options become defaults)."""
    directory = _flag_value(argv, "resume")
    if directory is None:
        return None
    from purejaxrl_lab import checkpoint

    path = Path(directory)
    if not (path / "checkpoints").is_dir():
        raise UsageError(f"resume={directory!r} is not allowed: it holds no checkpoints/ "
                         f"(not a results directory written with checkpointing)")
    if (path / "summary.json").exists():
        raise UsageError(f"resume={directory!r} is not allowed: that run is complete "
                         f"(summary.json is there)")
    store = checkpoint.Checkpoints(path / "checkpoints")
    try:
        step = store.latest()
        if step is None:
            raise UsageError(f"resume={directory!r} is not allowed: it holds no complete checkpoint")
        return store.meta(step)
    finally:
        store.close()


def _parse(command: str, argv: list[str]):
    import tyro

    import agents
    from agents.common.config import config_from_dict

    if not argv or argv[0].startswith("-"):
        raise UsageError(f"{command} needs an AGENT, one of: {', '.join(agents.available())}")
    try:
        module = agents.get(argv[0])
    except ValueError as e:
        raise UsageError(str(e)) from None
    rest = argv[1:]
    _check_flags(rest, module.Config, command)
    args_type = _args_type(module.Config, command)
    meta = _resume_meta(rest)
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
        default = args_type(config=config, env=meta["env"], seeds=len(meta["seeds"]))
    else:
        default = args_type(config=_preset(module, rest))
    prog = f"purejaxrl-lab {command} {argv[0]}"
    if "-h" in rest or "--help" in rest:
        tyro.cli(args_type, args=rest, default=default, prog=prog)  # prints help, exits 0
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            args = tyro.cli(args_type, args=rest, default=default, prog=prog)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise UsageError(_tyro_message(captured.getvalue())) from None
    except ValueError as e:  # a Config.__post_init__ check
        raise UsageError(str(e)) from None
    return argv[0], module, args, meta


def _run(command: str, argv: list[str]) -> int:
    """`train` and `sweep`: check everything, then compile, run, save, report."""
    _early_distributed(argv)
    from purejaxrl_lab import grid as grid_lib
    from purejaxrl_lab import loggers, runner, runtime

    name, module, args, meta = _parse(command, argv)
    sweep_kwargs = {}
    try:
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
        if args.resume is not None:
            if args.out is not None and Path(args.out).absolute() != Path(args.resume).absolute():
                raise ValueError(f"out={args.out!r} is not allowed with resume={args.resume!r}: "
                                 f"a resumed run writes its results where it was")
            out = Path(args.resume)
            seeds = meta["seeds"] if args.seeds == len(meta["seeds"]) else args.seeds
        else:
            out = Path(args.out) if args.out else Path("runs") / (
                f"{name}-{args.env}-{time.strftime('%Y%m%d-%H%M%S')}")
            if out.exists() and not out.is_dir():
                raise ValueError(f"out={str(out)!r} is a file; choose a new directory")
            if (out / "summary.json").exists() or (out / "checkpoints").exists():
                raise ValueError(f"out={str(out)!r} already exists and holds results or checkpoints; "
                                 f"choose a new directory, or --resume {out} to continue it "
                                 f"(existing results are never overwritten)")
            seeds = args.seeds
        checkpoints = out / "checkpoints" if args.checkpoint_every > 0 else None
        plan = runner.prepare(
            module, args.config, args.env, seeds, num_chunks=args.num_chunks, devices=args.devices,
            checkpoint_dir=checkpoints if args.resume is None else None,
            checkpoint_every=max(1, args.checkpoint_every),
            resume=out / "checkpoints" if args.resume is not None else None, **sweep_kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.resume is not None and args.checkpoint_every == 0:
        plan = dataclasses.replace(plan, checkpoint_dir=None)
    if args.compilation_cache:
        runtime.enable_compilation_cache(args.cache_dir)

    main_process = runtime.is_main_process()
    sinks = (loggers.make(args.log, out, config=dataclasses.asdict(plan.config),
                          run_name=out.name) if main_process else [])
    try:
        results = runner.execute(plan, progress=args.progress, loggers=sinks)
    finally:
        for sink in sinks:
            sink.close()
    if not main_process:
        return 0
    results.save(out)
    plot = results.plot(out / "curve.png")
    print()
    print(results.table())
    print(f"\nresults: {out}/ (summary.json, metrics.jsonl, metrics.npz"
          + (", checkpoints/" if plan.checkpoint_dir is not None else "") + ")")
    print(f"plot:    {plot}")
    return 0


def plot(argv: list[str]) -> int:
    import tyro

    @dataclasses.dataclass(frozen=True)
    class PlotArgs:
        dirs: tyro.conf.Positional[tuple[str, ...]]
        """Results directories of runs or sweeps to compare."""
        out: str = "plots"
        """Where curves.png and final_returns.png are written."""
        statistic: str = "iqm"
        """Across seeds: iqm, mean or median."""
        metric: str = "episode_return"
        """The metric the curves show."""

    captured = io.StringIO()
    if "-h" in argv or "--help" in argv:
        tyro.cli(PlotArgs, args=argv, prog="purejaxrl-lab plot")
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            args = tyro.cli(PlotArgs, args=argv, prog="purejaxrl-lab plot")
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise UsageError(_tyro_message(captured.getvalue())) from None
    from purejaxrl_lab import plots, results

    if not args.dirs:
        raise UsageError("plot needs one or more results dirs: purejaxrl-lab plot DIR [DIR ...]")
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
        paths = plots.compare(loaded, names, args.out, statistic=args.statistic, metric=args.metric)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for r, n in zip(loaded, names):
        print(f"{n}: {r.agent} on {r.env}, {len(r.seeds)} seeds"
              + (f", {len(r.settings)} settings" if hasattr(r, "settings") else ""))
    for p in paths:
        print(f"wrote {p}")
    return 0


def _short_names(dirs) -> list[str]:
    names = [Path(d).resolve().name for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def list_all() -> int:
    import agents
    import envs

    print("agents:")
    for name in agents.available():
        presets = ", ".join(sorted(getattr(agents.get(name), "PRESETS", {})))
        print(f"  {name}" + (f"    presets: {presets}" if presets else ""))
    print("environments:")
    for env_id in envs.registered():
        print(f"  {env_id}")
    return 0


COMMANDS = ["train", "sweep", "plot", "list"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if argv else 2
        command, rest = argv[0], argv[1:]
        if command in ("train", "sweep"):
            return _run(command, rest)
        if command == "plot":
            return plot(rest)
        if command == "list":
            return list_all()
        from envs import unknown_name_error

        raise UsageError(str(unknown_name_error("command", command, COMMANDS)))
    except UsageError as e:
        print(f"purejaxrl-lab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("purejaxrl-lab: interrupted", file=sys.stderr)
        return 130

"""Command line: `purejaxrl-lab train AGENT --env ID --seeds N [--out DIR] [--<config field> V]`,
`purejaxrl-lab list`.

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
                           [--no-progress] [--<config field> VALUE ...]
       purejaxrl-lab list
       purejaxrl-lab train AGENT --help     (every config field, with its meaning)"""


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def _train_args_type(config_cls):
    import tyro

    @dataclasses.dataclass(frozen=True)
    class TrainArgs:
        config: tyro.conf.OmitArgPrefixes[config_cls]  # type: ignore[valid-type]
        """Agent configuration."""
        env: str = "CartPole-v1"
        """Environment id (`purejaxrl-lab list` shows them)."""
        seeds: int = 8
        """Number of seeds (0..N-1), trained together in one compiled program."""
        out: str | None = None
        """Results directory (must be new or empty). Default: runs/AGENT-ENV-TIMESTAMP."""
        preset: str | None = None
        """Named configuration of the agent to start from (see `purejaxrl-lab list`)."""
        progress: bool = True
        """Show a progress bar."""
        num_chunks: int = 20
        """Progress updates during the run."""

    return TrainArgs


def _known_flags(config_cls) -> list[str]:
    """Every --option `train` accepts: TrainArgs' own fields, the config's fields, --no-<bool>."""
    own = [f for f in dataclasses.fields(_train_args_type(config_cls)) if f.name != "config"]
    fields = own + list(dataclasses.fields(config_cls))
    names = [f.name.replace("_", "-") for f in fields]
    bools = [f.name.replace("_", "-") for f in fields if f.type in (bool, "bool")]
    return names + ["no-" + b for b in bools] + ["help"]


def _check_flags(argv: list[str], config_cls) -> None:
    from envs import close_matches

    known = _known_flags(config_cls)
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("_", "-")
        if name not in known:
            hits = close_matches(name, known)
            hint = ("; closest: " + ", ".join("--" + h for h in hits)) if hits else ""
            raise UsageError(f"unknown option --{name}{hint} (see `purejaxrl-lab train AGENT --help`)")


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
    for i, arg in enumerate(argv):
        value = None
        if arg == "--preset" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--preset="):
            value = arg.split("=", 1)[1]
        if value is not None:
            from envs import unknown_name_error

            presets = getattr(module, "PRESETS", {})
            if value not in presets:
                raise UsageError(str(unknown_name_error("preset", value, list(presets))))
            return presets[value]
    return module.Config()


def _parse_train(argv: list[str]):
    import tyro

    import agents

    if not argv or argv[0].startswith("-"):
        raise UsageError(f"train needs an AGENT, one of: {', '.join(agents.available())}")
    try:
        module = agents.get(argv[0])
    except ValueError as e:
        raise UsageError(str(e)) from None
    rest = argv[1:]
    _check_flags(rest, module.Config)
    args_type = _train_args_type(module.Config)
    default = args_type(config=_preset(module, rest))
    prog = f"purejaxrl-lab train {argv[0]}"
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
    return argv[0], module, args


def train(argv: list[str]) -> int:
    from purejaxrl_lab import runner

    name, module, args = _parse_train(argv)
    try:
        plan = runner.prepare(module, args.config, args.env, args.seeds, num_chunks=args.num_chunks)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else Path("runs") / (
        f"{name}-{plan.env_id}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"out={str(out)!r} already exists and is not an empty directory; "
                         f"choose a new one (existing results are never overwritten)")

    results = runner.execute(plan, progress=args.progress)
    results.save(out)
    plot = results.plot(out / "curve.png")
    print()
    print(results.table())
    print(f"\nresults: {out}/ (summary.json, metrics.jsonl, metrics.npz)")
    print(f"plot:    {plot}")
    return 0


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if argv else 2
        command, rest = argv[0], argv[1:]
        if command == "train":
            return train(rest)
        if command == "list":
            return list_all()
        from envs import unknown_name_error

        raise UsageError(str(unknown_name_error("command", command, ["train", "list"])))
    except UsageError as e:
        print(f"purejaxrl-lab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("purejaxrl-lab: interrupted", file=sys.stderr)
        return 130

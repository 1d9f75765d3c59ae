import importlib


def test_public_names_import():
    for module, names in {
        "envs": ["make", "registered", "register", "EpisodeStatistics", "NormalizeObservation",
                 "FlattenObservation", "ClipAction", "RescaleAction", "ScaleReward", "VecEnv",
                 "summarize_episodes", "TransitionWrapper", "transition", "has_transition",
                 "reset_key"],
        "agents": ["get", "available", "Agent"],
        "agents.common": ["ActorCritic", "gae", "clipped_surrogate_loss", "value_loss",
                          "make_optimizer", "linear_schedule"],
        "agents.ppo": ["Config", "make", "make_train", "PRESETS", "State", "Params"],
        "purejaxrl_lab": ["run", "sweep", "prepare", "execute", "Results", "SweepResults", "load",
                          "load_policy", "Policy", "stats", "loggers", "plots", "runtime"],
        "purejaxrl_lab.runtime": ["cpu_cores", "cpu_model", "machine_description"],
        "purejaxrl_lab.stats": ["iqm", "mean", "median", "optimality_gap", "stratified_bootstrap_ci",
                                "probability_of_improvement", "performance_profile"],
    }.items():
        mod = importlib.import_module(module)
        for name in names:
            assert hasattr(mod, name), f"{module}.{name}"
        for name in getattr(mod, "__all__", []):
            assert hasattr(mod, name), f"{module}.__all__ names {name}"


def test_agents_registry():
    import agents
    from agents import ppo

    assert agents.available() == ["ppo"]
    assert agents.get("ppo") is ppo

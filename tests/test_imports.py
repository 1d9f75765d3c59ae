import importlib

import agents
from agents.common import check_agent_module


def test_public_names_import():
    for module, names in {
        "envs": ["make", "registered", "register", "EpisodeStatistics", "NormalizeObservation",
                 "FlattenObservation", "ClipAction", "RescaleAction", "ScaleReward", "VecEnv",
                 "summarize_episodes", "TransitionWrapper", "transition", "has_transition",
                 "reset_key"],
        "agents": ["get", "available", "register", "name_of", "Agent", "Score"],
        "agents.common": ["ActorCritic", "gae", "clipped_surrogate_loss", "value_loss",
                          "make_optimizer", "linear_schedule", "Score", "AgentModule",
                          "check_agent_module", "normalize_fields", "with_overrides", "Encoder",
                          "QNetwork", "GaussianActor", "CriticEnsemble", "ScannedGRU",
                          "RecurrentActorCritic", "reset_carry", "make_replay", "n_step_return",
                          "q_learning_target", "q_lambda_targets", "td_loss", "polyak",
                          "squashed_gaussian", "sac_critic_target", "temperature_loss"],
        "agents.common.replay": ["make_replay", "Steps", "ReplayState", "Batch", "nbytes"],
        "purejaxrl_lab": ["run", "sweep", "prepare", "execute", "Results", "SweepResults", "load",
                          "load_policy", "Policy", "evaluate", "Evaluation", "use_cpu_cores",
                          "stats", "loggers", "plots", "runtime"],
        "purejaxrl_lab.runtime": ["cpu_cores", "cpu_model", "machine_description", "use_cpu_cores"],
        "purejaxrl_lab.stats": ["iqm", "mean", "median", "optimality_gap", "stratified_bootstrap_ci",
                                "probability_of_improvement", "performance_profile"],
    }.items():
        mod = importlib.import_module(module)
        for name in names:
            assert hasattr(mod, name), f"{module}.{name}"
        for name in getattr(mod, "__all__", []):
            assert hasattr(mod, name), f"{module}.__all__ names {name}"


def test_every_registered_agent_follows_the_contract():
    assert "ppo" in agents.available()
    for name in agents.available():
        module = agents.get(name)
        check_agent_module(module)
        for attr in ("Config", "PRESETS", "HParams", "SCORE", "NAN_METRICS", "ACT_INPUT", "make",
                     "make_train"):
            assert hasattr(module, attr), f"{name}.{attr}"

"""envs/gym_adapter.py: a gymnasium env wmplan did not write (MuJoCo Reacher-v5) as a wmplan task.

gymnasium's env checker on the adapter, pixel size, state round trip, the dataset-goal reset
(a recorded start and goal state reproduce the recorded goal frame), NaN actions refused,
proprio selection errors, a 2-episode scripts/collect.py run, and the ``env=gym:<id>`` shorthand
(wmplan/cli.py) with a Pusher-v5 collection through it.
"""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wmplan.envs  # noqa: F401  (registers wmplan/Gym-*)
from tests.conftest import ROOT, run_script
from wmplan.checks import ConfigError
from wmplan.cli import dedicated_config, rewrite_gym_env
from wmplan.envs.gym_adapter import GymAdapter
from wmplan.worldmodel.data import EpisodeDataset

ID = "wmplan/Gym-Reacher-v5"


def make(**kw) -> gym.Env:
    return gym.make(ID, disable_env_checker=True, **kw)


def test_check_env_and_observation():
    env = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded proprio Box warns, by design
        check_env(env.unwrapped, skip_render_check=False)
    env.close()
    env = make()  # check_env closes the env it checked
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["proprio"].shape == (6,) and obs["proprio"].dtype == np.float32
    assert obs["pixels"].std() > 5, "blank frame"
    for k in ("success", "distance", "goal_image", "goal_proprio", "state"):
        assert k in info, k
    assert info["state"].shape == (env.unwrapped.state_dim,) and info["goal_image"].shape == (64, 64, 3)
    # the sampled goal puts the fingertip on the target: its image differs from the start
    assert np.abs(info["goal_image"].astype(int) - obs["pixels"]).sum() > 0
    small = make(image_size=32)
    assert small.reset(seed=0)[0]["pixels"].shape == (32, 32, 3)
    env.close(); small.close()


def test_state_round_trip_and_dataset_goal_reset():
    env = make()
    env.reset(seed=3)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    frames, states = [], []
    for _ in range(12):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        frames.append(obs["pixels"]); states.append(info["state"])
    # set_state / render_state reproduce a recorded frame, and leave the episode alone
    now = u.get_state()
    img, prop = u.render_state(states[3])
    assert np.array_equal(img, frames[3]) and prop.shape == (6,)
    assert np.array_equal(u.get_state(), now)
    u.set_state(states[5])
    assert np.allclose(u.get_state(), states[5])
    # recorded start + goal: the goal image is the recorded goal frame, distance is tip-to-tip
    other = make()
    obs, info = other.reset(seed=99, options={"state": states[0], "goal_state": states[11]})
    assert np.array_equal(obs["pixels"], frames[0]) and np.array_equal(info["goal_image"], frames[11])
    tip_goal = u.read_at(states[11], lambda: u.unwrapped_env.data.body("fingertip").xpos[:2].copy())
    tip_now = other.unwrapped.unwrapped_env.data.body("fingertip").xpos[:2]
    assert info["distance"] == pytest.approx(float(np.linalg.norm(tip_now - tip_goal)))
    obs, info = other.reset(seed=1, options={"state": states[11], "goal_state": states[11]})
    assert info["success"] and info["distance"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="go together"):
        other.reset(options={"state": states[0]})
    with pytest.raises(ValueError, match="shape"):
        u.set_state(states[0][:3])
    env.close(); other.close()


def test_bad_actions_and_settings_refused():
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0.0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="proprio"):
        GymAdapter(inner="Reacher-v5", proprio=[0, 40])
    with pytest.raises(ValueError, match="task="):
        GymAdapter(inner="Reacher-v5", task="nope")
    with pytest.raises(ValueError, match="inner="):
        GymAdapter(inner="NoSuchEnv-v0")
    env.close()


def test_expert_reaches_the_target():
    env = make()
    env.reset(seed=5)
    for _ in range(40):
        _, _, _, _, info = env.step(env.unwrapped.expert_action())
    assert info["success"], info["distance"]
    env.close()


def test_generic_adapter_any_registered_env():
    env = gym.make("wmplan/Gym-v0", inner="InvertedPendulum-v5", proprio="0:2", image_size=32,
                   inner_kwargs={"width": 64, "height": 64}, disable_env_checker=True)
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3) and obs["proprio"].shape == (2,)
    obs, _, _, _, info = env.step(np.zeros(1, np.float32))
    assert np.isfinite(info["distance"]) and info["state"].shape == (env.unwrapped.state_dim,)
    env.close()


def test_collect_two_episodes(tmp_path):
    out = tmp_path / "gym_reacher"
    run_script("collect.py", "env=gym_reacher", "episodes=2", "episode_length=6", "workers=1", f"out_dir={out}")
    ds = EpisodeDataset(out)
    ep = ds.load_episode(0)
    assert ds.meta["env_id"] == ID and ds.meta["proprio_dim"] == 6 and ds.meta["action_dim"] == 2
    assert ep.frames.shape == (7, 64, 64, 3) and ep.states.shape[0] == 7 and ep.states.shape[1] > 0


# ---- env=gym:<id> on the command line (wmplan/cli.py) -------------------------------------

ENV_DIR = ROOT / "configs" / "env"


def test_gym_env_shorthand_rewrite():
    # a dedicated config (configs/env/gym_reacher.yaml has kwargs.inner: Reacher-v5) wins
    assert rewrite_gym_env(["env=gym:Reacher-v5", "episodes=2"], ENV_DIR) == ["env=gym_reacher", "episodes=2"]
    # any other registered id: the generic configs/env/gym.yaml with the id as the adapter's inner
    assert rewrite_gym_env(["-m", "env=gym:Pusher-v5", "seed=1"], ENV_DIR) == [
        "-m", "env=gym", "env.kwargs.inner=Pusher-v5", "seed=1"]
    assert rewrite_gym_env(["env=point_maze", "out_dir=gym:x", "env=gym"], ENV_DIR) == [
        "env=point_maze", "out_dir=gym:x", "env=gym"]
    assert dedicated_config(ENV_DIR, "Pusher-v5") is None and dedicated_config(ENV_DIR, "Reacher-v5") == "gym_reacher"
    with pytest.raises(ConfigError, match=r"'Pushr-v5' is registered; close registered ids: Pusher-v5") as e:
        rewrite_gym_env(["env=gym:Pushr-v5"], ENV_DIR)
    assert "wmplan/" not in str(e.value)
    for bad, msg in (("env=gym:", "give a gymnasium id"), ("env=gym:wmplan/PushT-v0", "own config"),
                     ("env=gym:Pusher-v5,gym:Reacher-v5", "one gymnasium id"),
                     ("env=gym:no_such_module_xyz:Foo-v0", "does not import")):
        with pytest.raises(ConfigError, match=msg):
            rewrite_gym_env([bad], ENV_DIR)


def test_collect_gym_shorthand_end_to_end(tmp_path):
    out = tmp_path / "pusher"
    run_script("collect.py", "env=gym:Pusher-v5", "episodes=2", "episode_length=5", "workers=1", f"out_dir={out}",
               timeout=60)
    ds = EpisodeDataset(out)
    ep = ds.load_episode(1)
    assert ds.meta["env_id"] == "wmplan/Gym-v0" and ds.meta["env_kwargs"]["inner"] == "Pusher-v5"
    assert ds.meta["action_dim"] == 7 and ds.meta["proprio_dim"] == 0 and ds.meta["state_dim"] > 0
    assert ep.frames.shape == (6, 64, 64, 3) and ep.frames.std() > 5, "blank frames"
    bad = run_script("collect.py", "env=gym:Pushr-v5", f"out_dir={tmp_path / 'bad'}", timeout=60, check=False)
    assert bad.returncode == 2 and "Pushr-v5" in bad.stderr and "Pusher-v5" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_collect_default_out_dir_is_one_folder_per_env():
    """Each gym:<id> collects into its own default folder; wmplan envs keep data/<env id>."""
    from hydra import compose, initialize_config_dir

    def out_dir(*overrides: str) -> str:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return str(compose(config_name="collect", overrides=list(overrides)).out_dir)

    args = [rewrite_gym_env([f"env=gym:{i}"], ENV_DIR) for i in ("Pusher-v5", "InvertedPendulum-v5")]
    dirs = [out_dir(*a) for a in args]
    assert dirs == ["data/gym/Pusher-v5", "data/gym/InvertedPendulum-v5"]
    assert out_dir("env=push_t") == "data/wmplan/PushT-v0"
    assert out_dir("env=gym", "env.kwargs.inner=Pusher-v5", "out_dir=/tmp/x") == "/tmp/x"

"""MPC runner on a small real gymnasium env: a 2-D point rendered as a blob, with an analytic
world model (encoder = blob centroid, dynamics = the env's own integrator)."""
import gymnasium as gym
import numpy as np
import pytest
import torch

from wmplan.planners import EpisodeResult, EpisodeSpec, PlanResult, Planner, build_planner, run_mpc
from wmplan.planners.analytic import LinearLatentWorldModel

SIZE = 24
EXTENT = 1.2  # the image spans [-EXTENT, EXTENT]^2
SPEED = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def render(pos: np.ndarray) -> np.ndarray:
    """uint8 [SIZE,SIZE,3] gaussian blob centred at pos (x right, y down)."""
    c = (np.arange(SIZE) + 0.5) / SIZE * 2 * EXTENT - EXTENT
    xx, yy = np.meshgrid(c, c)
    img = np.exp(-((xx - pos[0]) ** 2 + (yy - pos[1]) ** 2) / (2 * 0.12**2))
    return np.repeat((img * 255).astype(np.uint8)[..., None], 3, axis=-1)


def centroid(frames: torch.Tensor) -> torch.Tensor:
    """Encoder: uint8 [B,T,H,W,3] -> blob centre [B,T,2]."""
    w = frames[..., 0].float()
    c = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE * 2 * EXTENT - EXTENT
    tot = w.sum(dim=(-2, -1)).clamp(min=1e-6)
    return torch.stack([(w * c).sum(dim=(-2, -1)) / tot, (w * c[:, None]).sum(dim=(-2, -1)) / tot], -1)


class PointEnv(gym.Env):
    """2-D point; action = velocity in [-1,1]^2 scaled by SPEED; goal is another point."""

    def __init__(self):
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Dict({
            "pixels": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
            "proprio": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        })
        self.actions: list[np.ndarray] = []

    def _obs_info(self):
        d = float(np.linalg.norm(self.pos - self.goal))
        obs = {"pixels": render(self.pos), "proprio": self.pos.astype(np.float32)}
        info = {"goal_image": render(self.goal), "goal_proprio": self.goal.astype(np.float32),
                "success": d < 0.08, "distance": d}
        return obs, info

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.5, 0.5, 2)
        self.goal = self.np_random.uniform(-0.5, 0.5, 2)
        if options and "goal" in options:
            self.goal = np.asarray(options["goal"], dtype=np.float64)
        self.actions = []
        return self._obs_info()

    def step(self, action):
        self.actions.append(np.array(action))
        self.pos = np.clip(self.pos + SPEED * np.clip(action, -1, 1), -0.8, 0.8)
        obs, info = self._obs_info()
        return obs, 0.0, False, False, info


def specs(*seeds: int) -> list[EpisodeSpec]:
    return [EpisodeSpec(seed=s) for s in seeds]


def point_world_model(frameskip: int = 2) -> LinearLatentWorldModel:
    """The env's integrator in latent space: z' = z + SPEED * sum of the frameskip actions."""
    bmat = SPEED * torch.cat([torch.eye(2)] * frameskip, 1)
    ones = torch.ones(2 * frameskip)
    return LinearLatentWorldModel(torch.eye(2), bmat, -ones, ones, encoder=centroid, frameskip=frameskip)


def _planner():
    return build_planner({"name": "cem", "samples": 64, "elites": 8, "iterations": 4, "horizon": 5},
                         energy={"goal": {"metric": "l1", "steps": "all"}})


def test_reaches_goal_batched():
    envs = [PointEnv() for _ in range(3)]
    res = run_mpc(envs, point_world_model(), _planner(), episodes=specs(0, 1, 2), max_steps=40, replan_every=2)
    assert [r.seed for r in res] == [0, 1, 2]
    for r in res:
        assert isinstance(r, EpisodeResult)
        assert r.success and r.final_distance < 0.08 and r.steps < 40
        assert r.distances[-1] < r.distances[0]
        assert len(r.frames) == r.steps + 1 and r.frames[0].shape == (SIZE, 2 * SIZE, 3)
        assert len(r.plan_times_ms) == len(r.plan_energies) == -(-r.steps // 2)


def test_batched_equals_one_by_one_and_static_batch():
    """Per-env generators: the batch composition (and compaction) does not change any env's plans."""
    wm = point_world_model()
    batched = run_mpc([PointEnv() for _ in range(3)], wm, _planner(), episodes=specs(3, 4, 5), max_steps=30, replan_every=2)
    static = run_mpc([PointEnv() for _ in range(3)], wm, _planner(), episodes=specs(3, 4, 5), max_steps=30,
                     replan_every=2, compact=False, record=False)
    for i, seed in enumerate([3, 4, 5]):
        one = run_mpc([PointEnv()], wm, _planner(), episodes=specs(seed), max_steps=30, replan_every=2)[0]
        for other in (batched[i], static[i]):
            assert other.steps == one.steps and other.success == one.success
            np.testing.assert_allclose(other.distances, one.distances, atol=1e-6)
    assert static[0].frames == []


class FixedPlanner(Planner):
    """Returns actions [B,H,A] = arange, to check how the runner splits predictor steps."""

    def plan(self, world_model, context, goal, init=None, generator=None, horizon=None):
        b, h = context.batch, self._horizon(init, horizon)
        a = torch.arange(h * world_model.action_dim, dtype=torch.float32).reshape(1, h, -1) / 100
        return PlanResult(a.expand(b, -1, -1), torch.zeros(b))


def test_frameskip_split_and_waves():
    """A = frameskip * A_env: each predictor step becomes frameskip consecutive env actions;
    more seeds than envs run in waves; reset options reach the env."""
    envs = [PointEnv(), PointEnv()]
    p = FixedPlanner()
    p.config.horizon = 3
    eps = [EpisodeSpec(seed=s, options={"goal": [0.7, 0.7]}) for s in (0, 1, 2)]
    res = run_mpc(envs, point_world_model(frameskip=2), p, episodes=eps, max_steps=4, replan_every=4)
    assert len(res) == 3 and all(r.steps == 4 for r in res)
    got = np.stack(envs[0].actions)  # env 0 ran seed 2 last
    np.testing.assert_allclose(got, np.arange(8).reshape(4, 2) / 100, atol=1e-7)
    assert res[2].reset_options == {"goal": [0.7, 0.7]}
    with pytest.raises(ValueError, match="replan_every"):
        run_mpc(envs, point_world_model(frameskip=2), p, episodes=specs(0), max_steps=4, replan_every=3)


def test_progress_callback_and_context_frames():
    events, ended = [], []
    res = run_mpc([PointEnv()], point_world_model(), _planner(), episodes=specs(0), max_steps=6, replan_every=2,
                  context_frames=3, progress=events.append, on_episode=ended.append)
    kinds = [e["event"] for e in events]
    assert ended == res and kinds.count("replan") == len(res[0].plan_times_ms)


def test_gradient_planner_in_mpc():
    """The runner plans under no_grad; the gradient planner re-enables grad internally."""
    p = build_planner({"name": "gradient", "samples": 2, "iterations": 20, "horizon": 4},
                      energy={"goal": {"metric": "l2", "steps": "all"}})
    res = run_mpc([PointEnv()], point_world_model(), p, episodes=specs(1), max_steps=20, replan_every=2)
    assert res[0].success


def test_spare_env_left_at_its_time_limit_is_reset_for_a_short_last_wave():
    """Wave 1 runs both envs into the TimeLimit; wave 2 uses only env 0, and env 1 (truncated,
    never reset) must not be stepped un-reset (gymnasium asserts on that)."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    from gymnasium.wrappers import TimeLimit

    vec = SyncVectorEnv([lambda: TimeLimit(PointEnv(), 6)] * 2, autoreset_mode=AutoresetMode.DISABLED)
    far = [EpisodeSpec(seed=s, options={"goal": [5.0, 5.0]}, max_steps=10) for s in range(3)]  # unreachable
    res = run_mpc(vec, point_world_model(), _planner(), episodes=far, max_steps=10, replan_every=2)
    assert [r.steps for r in res] == [6, 6, 6] and not any(r.success for r in res)
    vec.close()

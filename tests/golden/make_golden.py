"""Write the golden reference outputs of the bundled world models (``tests/golden/<name>.pt``).

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python tests/golden/make_golden.py            # all models
    MUJOCO_GL=egl OMP_NUM_THREADS=1 python tests/golden/make_golden.py reacher    # one model

WHEN IT IS LEGITIMATE TO REGENERATE: only for an *intended* numerics change of the bundled
models (an encoder/pooling/predictor change that is meant to move their outputs, or a
re-trained bundled model), and only together with re-measuring the README figures that
were obtained with those models. A refactor must leave ``tests/test_golden.py`` passing
against the files as they are; regenerating to make it pass hides exactly the silent
change the test exists to catch. Say in the commit message why the files were rewritten.

Each file (plain tensors / strings; loads with ``torch.load(weights_only=True)``, ~45 KB)::

    model "pointmaze", model_sha256 (of worldmodel/pretrained/<name>.pt), env_id, env_kwargs
    frames       uint8   [1, 2, H, W, 3]  reset frame (seed 0) and the frame one predictor
                                          step (frameskip env steps) later
    proprio      float32 [1, 2, P]        proprio of those frames
    actions      float32 [3, 4, A]        seeded, inside the model's action bounds (A planner units)
    tf_actions   float32 [1, 2, A]        actions[0, :2] (teacher-forced pass)
    encode       float32 [1, 2, N, D]     WorldModel.encode(frames)
    rollout_latents [3, 4, N, D], rollout_proprio [3, 4, P], rollout_disagreement [3, 4]
                                          WorldModel.rollout(encode[:, :1], proprio[:, :1], actions)
    tf_latents   [1, 2, N, D], tf_disagreement [1, 2]
                                          WorldModel.predict_next(encode, proprio, tf_actions)

Frames are stored (not re-rendered) so the test does not depend on MuJoCo rendering or on
env changes; the env is only used here, to get a realistic input.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

GOLDEN_DIR = Path(__file__).resolve().parent
MODELS = ("pointmaze", "reacher", "push_t", "arm_reach", "arm_push", "arm_pick_place")
SEED = 0
SAMPLES, HORIZON = 3, 4


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@torch.no_grad()
def model_outputs(wm, frames: Tensor, proprio: Tensor, actions: Tensor, tf_actions: Tensor) -> dict[str, Tensor]:
    """The outputs the golden files pin, for one world model and its stored inputs.

    frames uint8 [1,2,H,W,3], proprio [1,2,P], actions [S,H,A], tf_actions [1,2,A]
    -> dict of CPU fp32 tensors (see the module docstring for the keys and shapes).
    """
    z = wm.encode(frames)
    ro = wm.rollout(z[:, :1], proprio[:, :1], actions)
    tf = wm.predict_next(z, proprio, tf_actions)
    out = {"encode": z, "rollout_latents": ro.latents, "rollout_proprio": ro.proprio,
           "rollout_disagreement": ro.disagreement, "tf_latents": tf.latents, "tf_disagreement": tf.disagreement}
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items() if v is not None}


def make_inputs(wm, env_id: str, env_kwargs: dict) -> dict[str, Tensor]:
    """Render the reset frame (seed 0), act for one predictor step, and draw seeded actions."""
    import gymnasium as gym

    import wmplan.envs  # noqa: F401  (registers the wmplan/* ids)

    g = torch.Generator().manual_seed(SEED)
    low, high = wm.action_low.cpu(), wm.action_high.cpu()
    actions = low + (high - low) * torch.rand(SAMPLES, HORIZON, wm.action_dim, generator=g)
    env = gym.make(env_id, **env_kwargs)
    try:
        obs, _ = env.reset(seed=SEED)
        frames, prop = [obs["pixels"]], [obs["proprio"]]
        for a in actions[0, 0].view(wm.frameskip, -1).numpy():  # predictor action = frameskip env actions
            obs, *_ = env.step(a)
        frames.append(obs["pixels"])
        prop.append(obs["proprio"])
    finally:
        env.close()
    return {"frames": torch.from_numpy(np.stack(frames))[None].contiguous(),
            "proprio": torch.from_numpy(np.stack(prop).astype(np.float32))[None],
            "actions": actions.float(), "tf_actions": actions[:1, :2].clone().float()}


def make_golden(name: str) -> Path:
    from wmplan.worldmodel.pretrained_models import resolve_model_path
    from wmplan.worldmodel.world_model import WorldModel

    path = resolve_model_path(f"pretrained:{name}")
    wm = WorldModel.load(path, device="cpu")
    env_id, env_kwargs = wm.meta["env_id"], dict(wm.meta.get("env_kwargs") or {})
    inputs = make_inputs(wm, env_id, env_kwargs)
    record = {"model": name, "model_sha256": sha256_of(path), "env_id": env_id, "env_kwargs": env_kwargs,
              "seed": SEED, **inputs, **model_outputs(wm, **inputs)}
    out = GOLDEN_DIR / f"{name}.pt"
    torch.save(record, out)
    return out


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    for name in argv or MODELS:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; golden models: {MODELS}")
        out = make_golden(name)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main(sys.argv[1:])

"""wmplan: latent world-model planning for robotics.

Subpackages (each a folder at the top of the source tree, installed under ``wmplan``):

- :mod:`wmplan.envs` -- MuJoCo goal-image tasks (gymnasium API); importing it registers
  the ``wmplan/*`` ids.
- :mod:`wmplan.worldmodel` -- encoders, the action-conditioned predictor, datasets,
  training loops and checkpoints.
- :mod:`wmplan.planners` -- planners, energies, the MPC runner and the evaluator.
- :mod:`wmplan.protocols` -- the types both sides share (world-model and encoder
  protocols, plan inputs and outputs).
"""
from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__"]

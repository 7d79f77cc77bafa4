"""From a task and an optimizer recipe to a run ready on the devices: initial variables, optimizer, state, mesh and
the jitted step. The train loop, the benchmarks and the tests all build their runs here."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.sharding import Mesh

from yolojax.detectors import DetectionTask
from yolojax.train.optim import OptimizerPlan, build_optimizer
from yolojax.train.state import TrainState, VariablesLayout, create_state
from yolojax.train.step import build_train_step, make_mesh, replicate
from yolojax.train.transfer import initial_variables


@dataclasses.dataclass
class Training:
    """mesh: the devices; optimizer: the optax transformation; state: the TrainState replicated on `mesh`;
    step: `step(state, batch, hyper) -> (state, metrics)`, jitted over the mesh (it donates `state`)."""

    mesh: Mesh
    optimizer: Any
    state: TrainState
    step: Callable


def initial_state(task: DetectionTask, plan: OptimizerPlan, image_hw: tuple[int, int], *, seed: int = 0,
                  variables: dict | None = None) -> tuple[TrainState, Any]:
    """(TrainState at iteration 0 on the default device, optimizer). The model is initialised from `seed` (the
    first half of its split; the second seeds the state's PRNG key); given `variables` (pretrained weights), every
    tensor of them whose path and shape fit replaces the fresh one, and the count is printed
    (yolojax.train.transfer)."""
    init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = initial_variables(task, init_key, image_hw, variables)
    optimizer = build_optimizer(plan, VariablesLayout.of(variables).group_ends)
    return jax.jit(create_state, static_argnums=1)(variables, optimizer, state_key), optimizer


def build_training(task: DetectionTask, plan: OptimizerPlan, image_hw: tuple[int, int], *, seed: int = 0,
                   variables: dict | None = None, mesh: Mesh | None = None, ema_decay: float = 0.9999,
                   ema_tau: float = 2000.0, exchange: str = "flat") -> Training:
    """`initial_state` replicated over `mesh` (default: every device) with its jitted step (`exchange`: see
    yolojax.train.step)."""
    state, optimizer = initial_state(task, plan, image_hw, seed=seed, variables=variables)
    mesh = mesh if mesh is not None else make_mesh()
    step = build_train_step(task.loss_fn, optimizer, mesh, ema_decay=ema_decay, ema_tau=ema_tau, exchange=exchange)
    return Training(mesh, optimizer, replicate(state, mesh), step)

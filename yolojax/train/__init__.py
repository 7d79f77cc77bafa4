"""yolojax.train: configs, optimizer recipe, EMA, the data-parallel step, checkpoints and the loop.

- `config.load_config(["key=value", ...])` -> Config (configs/default.yaml < configs/<cfg>.yaml < overrides)
- `optim.plan_optimizer` / `optim.hyper_at` / `optim.build_optimizer`: the reference trainer's recipe
- `ema.ema_update`, `state.create_state`, `step.build_train_step` (jax.shard_map over a 'data' mesh)
- `checkpoints.save_checkpoint` / `restore_checkpoint` (orbax), `loop.train(cfg)` and `yolojax train`
- `tasks.build_task` and the DetectionTask protocol shared with val / predict
Modules are imported on use (no heavy imports here).
"""

"""yolojax.train: configs, optimizer recipe, EMA, the data-parallel step, checkpoints and the loop.

- `config.load_config(["key=value", ...])` -> Config (the packaged default.yaml < a recipe (`cfg=`) < overrides)
- `optim.plan_optimizer` / `optim.hyper_at` / `optim.build_optimizer`: the reference trainer's recipe
- `ema.ema_update`, `state.create_state`, `step.build_train_step` (jax.shard_map over a 'data' mesh)
- `checkpoints.save_checkpoint` / `restore_checkpoint` (orbax), `loop.train(cfg, evaluate=...)`
- `distributed.maybe_initialize_distributed`: joining a multi-process job
The tasks it trains are `yolojax.detectors`; validation comes in as the loop's `evaluate` (`yolojax.eval`).
"""

"""`yolojax train`: build data, task, optimizer and state; jit the step; loop over epochs; validate; checkpoint.

Read top to bottom: `train(cfg)` is the whole loop. The schedule follows the reference trainer: lr factor per epoch,
warmup / accumulation per iteration (yolojax.train.optim), mosaic off for the last `close_mosaic` epochs,
validation of the EMA weights every epoch, best/last checkpoints, early stopping on fitness
(0.1 mAP50 + 0.9 mAP50-95). Differences: `time` is a hard budget (the run stops, validates and saves when it is
spent; epochs are not re-planned), and multi-scale picks one of a few fixed sizes per batch so each compiles once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from yolojax.detectors import DetectionTask, build_task
from yolojax.models.weights import load_weights
from yolojax.train import artefacts, console, records
from yolojax.train import checkpoints as ckpt
from yolojax.train import distributed as dist
from yolojax.train.config import (
    Config,
    ConfigError,
    load_config,
    load_model_config,
    merge,
)
from yolojax.train.devices import describe, local_devices, restrict_platform, select_devices
from yolojax.train.feed import Prefetch, TrainData, build_train_data, resize_batch
from yolojax.train.interrupt import StopFlag
from yolojax.train.optim import hyper_at, plan_optimizer
from yolojax.train.setup import initial_state
from yolojax.train.step import build_train_step, make_mesh, replicate, shard_batch


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the message names the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    iterations: int
    best_fitness: float | None
    last_metrics: dict
    interrupted: bool = False


def compute_dtype(cfg: Config, platform: str | None = None) -> Any:
    """bf16 compute on GPU/TPU (the devices' `platform`, default JAX's) when amp, else fp32 (params stay fp32)."""
    platform = platform or jax.default_backend()
    return jnp.bfloat16 if cfg.amp and platform in ("gpu", "tpu", "cuda", "rocm") else jnp.float32


def fitness_of(metrics: dict) -> float:
    if "fitness" in metrics:
        return float(metrics["fitness"])
    return 0.1 * float(metrics.get("metrics/mAP50(B)", 0.0)) + 0.9 * float(metrics.get("metrics/mAP50-95(B)", 0.0))


def resolve_run(cfg: Config) -> tuple[Config, Path, bool]:
    """(config, run directory, resuming?) — a resumed run takes its saved config back. Process 0 picks the
    directory, which every process of a multi-process run then uses (a filesystem they share)."""
    if jax.process_index() > 0:
        run_dir = None
    elif cfg.resume:
        run_dir = ckpt.latest_resumable_run(cfg.project) if cfg.resume is True else Path(str(cfg.resume)).absolute()
        ckpt.require_run_folder(run_dir, cfg.resume)
    else:
        load_model_config(cfg.model)  # a wrong model name is a one-line error before any folder exists
        run_dir = records.new_run_dir(cfg.project, cfg.name, cfg.exist_ok)
    run_dir = Path(dist.from_main(run_dir and str(run_dir)))
    if not cfg.resume:
        return cfg, run_dir, False
    saved = merge(load_config(["cfg=none"]), records.load_args(run_dir), str(run_dir / "args.yaml"))
    baseline = load_config([f"cfg={cfg.cfg or 'none'}"])  # what the command line gives when it names no key
    saved = Config(ckpt.resumed_config(cfg, saved, baseline, run_dir))
    ckpt.check_unfinished(run_dir, saved.epochs)
    return saved, run_dir, True


# Batches on their way to the device while a step runs, and the threads copying them there: copying a large batch
# out of the workers' shared memory costs about as much as a small model's step, and the copies parallelise
# (measurements: benchmarks/2026-11-25_train_loop_feed/ and 2026-11-26_multi_gpu/: on 2 GPUs, 8 threads and 6 batches
# ahead lift the loop's busy share from 0.89 to 0.96).
PREFETCH_DEPTH = 6
COPY_THREADS = 8
STOP_CHECK_EVERY = 10  # processes compare Ctrl-C and clocks this often (a collective the host waits for)


@dataclasses.dataclass
class _Run:
    """Everything one training run holds (host side); `state` is the replicated device TrainState."""

    cfg: Config
    run_dir: Path
    task: DetectionTask
    data: TrainData
    evaluate: Callable
    plan: Any
    state: Any
    step: Callable
    mesh: Any
    sizes: tuple
    last: Any       # orbax manager of the latest checkpoints
    best: Any       # orbax manager of the best checkpoint
    meta: dict      # epoch / batch to continue from, best fitness and epoch
    main: bool      # process 0: the one that prints and writes files
    progress: bool = True
    data_state: Any = None  # the train pipeline's position after the last batch a step consumed (for resume)
    samples: Any = None     # artefacts.BatchSamples: the first batches, drawn after the first epoch's steps


def _setup(cfg: Config, task: DetectionTask | None, data: TrainData | None, evaluate: Callable | None,
           devices: list) -> _Run:
    """Run directory, data, task, optimizer plan, initial (or resumed) state, the jitted step over `devices`."""
    cfg, run_dir, resuming = resolve_run(cfg)
    main = jax.process_index() == 0
    try:
        data = data if data is not None else build_train_data(cfg)
    except Exception:
        if main and not resuming and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that never started leaves no folder behind
        raise
    if main and not resuming:
        cleared = ckpt.clear_previous_run(run_dir)  # exist_ok: the folder's earlier run is replaced, not mixed in
        if cleared:
            print(f"exist_ok=True: {run_dir} held an earlier run; replaced its {', '.join(cleared)}", flush=True)
        records.save_args(run_dir, cfg)
    if task is None:
        task = build_task(load_model_config(cfg.model), data.num_classes, dtype=compute_dtype(cfg, devices[0].platform),
                          hyp=cfg)
    nb = data.batches_per_epoch
    plan = plan_optimizer(cfg, num_classes=data.num_classes, dataset_size=data.train_size, batches_per_epoch=nb)

    # a resumed run takes every tensor from its checkpoint: its initial weights are not read (they may be gone)
    variables = load_weights(cfg.weights)[0] if cfg.weights and not resuming else None
    state, optimizer = initial_state(task, plan, (cfg.imgsz, cfg.imgsz), seed=cfg.seed, variables=variables)
    last = ckpt.open_manager(run_dir / "weights" / "ckpt_last", max_to_keep=2)
    best = ckpt.open_manager(run_dir / "weights" / "ckpt_best", max_to_keep=1)
    meta = {"epoch": 0, "batch": 0, "best_fitness": None, "best_epoch": -1}
    if resuming:
        state, meta, _ = ckpt.restore_latest(last, state)  # the newest complete step (damaged ones set aside)
        if main:
            ckpt.drop_results_after(run_dir / "results.csv", meta["epoch"])
            print(f"Resuming {run_dir} at epoch {meta['epoch'] + 1}, batch {meta['batch']}", flush=True)
    mesh = make_mesh(devices)
    step = build_train_step(task.loss_fn, optimizer, mesh, ema_decay=cfg.ema_decay, ema_tau=cfg.ema_tau)
    sizes = (tuple(data.size_buckets) if cfg.multi_scale else ()) or (cfg.imgsz,)
    if main:
        if getattr(data, "summary", None):  # TrainData stand-ins need not scan labels
            print(data.summary, flush=True)
        print(f"Training {task.name} on {cfg.data} for {cfg.epochs} epochs, {nb} batches of "
              f"{cfg.batch} on {mesh.size} {devices[0].platform} device(s); optimizer {plan.name}(lr={plan.lr0}, "
              f"momentum={plan.momentum}){_rendered_in_step(data)}; run directory {run_dir}", flush=True)
        print(console.model_summary(task, state.variables(), cfg.imgsz), flush=True)
        if cfg.plots and not resuming:
            artefacts.write_labels_plot(data, run_dir / "labels.jpg")
    return _Run(cfg, run_dir, task, data, evaluate or skip_validation, plan, replicate(state, mesh), step, mesh,
                sizes, last, best, meta, main, samples=artefacts.BatchSamples(main and bool(cfg.plots)))


def _rendered_in_step(data: TrainData) -> str:
    return f"; augmentation in the step: {data.on_device}" if data.on_device else ""


def _save(run: _Run, manager=None, data_state=None) -> int:
    """Checkpoint the state with run.meta (every process: orbax saves are collective)."""
    return ckpt.save_checkpoint(manager or run.last, run.state, {**run.meta, "data_state": data_state})


def _say(run: _Run, message: str) -> None:
    """Print on process 0 only (every process runs the same loop)."""
    if run.main:
        print(message, flush=True)


def _settle_garbage() -> None:
    """Collect garbage now, between epochs, and move what survives out of the collector's sight (`gc.freeze`): a
    full collection in the middle of an epoch walks every object JAX keeps (traced functions, compiled programs)
    and stalls the steps (benchmarks/2026-11-25_train_loop_feed/README.md)."""
    gc.collect()
    gc.freeze()


def _train_epoch(run: _Run, epoch: int, should_stop: Callable[[int], str | None]) -> tuple[str | None, int, _Tally]:
    """Iterate one epoch (from run.meta's batch when resuming into it, with the loss tally saved there). Returns
    (why it stopped early or None, batches done, the epoch's loss tally)."""
    cfg, nb = run.cfg, run.data.batches_per_epoch
    start = run.meta["batch"] if epoch == run.meta["epoch"] else 0
    mosaic = epoch < cfg.epochs - cfg.close_mosaic if cfg.close_mosaic else True
    bar = console.EpochBar(run.task.loss_names, run.mesh.local_devices[0], nb, start, f"{epoch + 1}/{cfg.epochs}",
                           run.main and run.progress)
    batches = run.data.train_epoch(epoch, mosaic=mosaic, start_batch=start,
                                   data_state=run.meta.get("data_state") if start else None)
    tally, pending, done, why = _Tally(run.meta.get("epoch_losses") if start else None), None, start, None

    def host_batches():  # drawn in order by the prefetch thread, with the pipeline's position after each batch
        for i, batch in enumerate(batches, start):
            imgsz = run.sizes[np.random.default_rng([cfg.seed, i + nb * epoch]).integers(len(run.sizes))]
            run.samples.keep(i + nb * epoch, batch)
            yield i, imgsz, batch, run.data.data_state()

    def to_device(item):  # on the prefetch threads: multi-scale resize, host-to-device copy
        i, imgsz, batch, state = item
        return i, imgsz, shard_batch(resize_batch(batch, imgsz), run.mesh), state

    _settle_garbage()
    with Prefetch(host_batches(), depth=PREFETCH_DEPTH, prepare=to_device, threads=COPY_THREADS) as items:
        for i, imgsz, device_batch, data_state in items:
            ni = i + nb * epoch
            hyper = hyper_at(run.plan, ni, epoch)
            run.state, metrics = run.step(run.state, device_batch, replicate(hyper, run.mesh))
            if i == start:
                gc.freeze()  # what the first step built (a compile) lives on: keep it out of later collections
            run.data_state = data_state
            if pending is not None:  # read the previous step's metrics: keeps one step in flight
                tally.add(pending, bar, run)
            pending, done = (metrics, imgsz, hyper), i + 1
            why = should_stop(ni + 1)
            if why:
                break
    if pending is not None:
        tally.add(pending, bar, run)
    bar.close()
    run.samples.write(run.run_dir, run.data.names)  # after the steps: the first epoch's kept batches
    return why, done, tally


def _end_epoch(run: _Run, epoch: int, losses, started: float, board) -> None:
    """Validate the EMA, record results, save last (and best) checkpoints and exported EMA weights."""
    cfg = run.cfg
    # each process validates its copy; process 0's numbers decide for all
    ema = dist.process_local(run.state).ema_variables()
    metrics = dist.from_main(run.evaluate(run.task, ema, run.data, cfg) if cfg.val or epoch + 1 == cfg.epochs else {})
    table = metrics.pop("table", None)  # the evaluator's printed lines, not a results.csv column
    fitness = fitness_of(metrics) if metrics else None
    improved = fitness is not None and (run.meta["best_fitness"] is None or fitness >= run.meta["best_fitness"])
    if improved:
        run.meta.update(best_fitness=fitness, best_epoch=epoch)
    run.meta.update(epoch=epoch + 1, batch=0, epoch_losses=None, last_metrics=metrics)
    last_hyper = hyper_at(run.plan, (epoch + 1) * run.data.batches_per_epoch - 1, epoch)
    row = records.results_row(epoch, run.task.loss_names, losses, metrics, last_hyper.lr, time.time() - started)
    if run.main:
        records.append_results(run.run_dir / "results.csv", row)
        board.scalars(row, epoch + 1)
        print(console.epoch_lines(row, table), flush=True)
    if cfg.save:
        _save(run)
        _export(run.run_dir / "weights" / "last", run)
        if improved:
            _save(run, run.best)
            _export(run.run_dir / "weights" / "best", run)


def _run_epochs(run: _Run, board, stop_at_iteration: int | None, out_of_time: Callable[[], bool]) -> bool:
    """Train from run.meta's epoch to the last (or an early stop). Returns whether it was interrupted."""
    cfg, nb, interrupted = run.cfg, run.data.batches_per_epoch, False
    with StopFlag() as flag:
        def should_stop(iterations: int) -> str | None:  # the same answer on every process
            if stop_at_iteration is not None and iterations >= stop_at_iteration:
                return "interrupted"
            if dist.is_multi_process() and iterations % STOP_CHECK_EVERY:
                return None
            if dist.any_process(flag.requested):
                return "interrupted"
            return "time budget spent" if dist.any_process(out_of_time()) else None

        epoch = run.meta["epoch"]
        while epoch < cfg.epochs:
            started = time.time()
            why, done, tally = _train_epoch(run, epoch, should_stop)
            if why == "interrupted":  # Ctrl-C (or stop_at_iteration): save where we are and leave
                interrupted = True
                # the epoch's loss tally too, so that its results.csv row covers every batch once resumed
                run.meta.update(epoch=epoch, batch=done, epoch_losses=tally.saved())
                if done >= nb:  # after the epoch's last batch: resume at the next (this one's row is skipped)
                    run.meta.update(epoch=epoch + 1, batch=0, epoch_losses=None)
                _save(run, data_state=run.data_state if run.meta["batch"] else None)
                _say(run, f"Interrupted: checkpoint saved in {run.last.directory}; resume with "
                     f"`yolojax train resume={run.run_dir}`")
                break
            _end_epoch(run, epoch, tally.mean(), started, board)
            epoch += 1
            stale = epoch - 1 - run.meta["best_epoch"] >= cfg.patience
            if why or dist.any_process(out_of_time()) or stale:
                reason = why or ("time budget spent" if not stale else f"no improvement in {cfg.patience} epochs")
                _say(run, f"Stopping early: {reason}")
                run.meta["finished"] = f"stopped early: {reason}"
                if cfg.save:
                    _save(run)  # the latest checkpoint says so: resuming the run is refused
                break
    return interrupted


def skip_validation(task, ema_variables, data, cfg) -> dict:
    """The `evaluate` of a run that does not validate (no metrics: no best checkpoint, no early stop)."""
    return {}


def train(cfg: Config, *, task: DetectionTask | None = None, data: TrainData | None = None,
          evaluate: Callable | None = None, final_validation: Callable | None = None,
          stop_at_iteration: int | None = None, progress: bool = True) -> TrainResult:
    """Train per `cfg`. `task`, `data`, `evaluate` replace the configured ones (tests use small stand-ins).

    evaluate(task, ema_variables, data, cfg) -> dict: results.csv values (and fitness), plus optionally "table",
    the lines to print under the epoch's bar. final_validation(task, variables, data, cfg, run_dir) -> str: run
    once after training on the best weights (the last EMA without a saved best); its text is printed.
    stop_at_iteration: act as if Ctrl-C arrived after that many iterations (checkpoint, then return).
    """
    restrict_platform(cfg.get("device"))  # before JAX starts a backend
    dist.maybe_initialize_distributed()
    devices = select_devices(cfg.get("device"))  # before the run folder exists: a wrong device leaves none
    if cfg.batch % len(devices):
        raise ConfigError(f"batch={cfg.batch} does not split over the {describe(devices)} devices of this run; "
                          f"choose a multiple of {len(devices)}")
    hint = console.tuning_hint(bool(cfg.get("deterministic")), devices, os.environ.get("XLA_FLAGS", ""))
    if hint and jax.process_index() == 0:
        print(hint, flush=True)
    with jax.default_device(local_devices(devices)[0]) if cfg.get("device") else contextlib.nullcontext():
        return _train(cfg, task, data, evaluate, final_validation, devices, stop_at_iteration, progress)


def _train(cfg, task, data, evaluate, final_validation, devices, stop_at_iteration, progress) -> TrainResult:
    """`train` on `devices`."""
    run = _setup(cfg, task, data, evaluate, devices)
    run.progress = progress
    cfg, start_time, first_epoch = run.cfg, time.time(), run.meta["epoch"]
    board = records.TensorBoard(run.run_dir / "tensorboard", cfg.tensorboard and run.main)
    out_of_time = lambda: cfg.time is not None and time.time() - start_time > cfg.time * 3600  # noqa: E731
    try:
        interrupted = _run_epochs(run, board, stop_at_iteration, out_of_time)
    finally:
        run.data.close()  # the train pipeline's worker processes
        gc.unfreeze()  # what the epochs froze can be collected again once the run's objects are dropped
    board.close()
    if run.main and (run.run_dir / "results.csv").exists() and cfg.plots:
        records.plot_results(run.run_dir / "results.csv", run.run_dir / "results.png")
    if run.main and not interrupted:
        print(console.completed(run.meta["epoch"] - first_epoch, time.time() - start_time), flush=True)
        if final_validation is not None:
            _validate_best(run, final_validation)
    _say(run, f"Results saved to {run.run_dir}")
    return TrainResult(run.run_dir, run.meta["epoch"], int(jax.device_get(run.state.iteration)),
                       run.meta["best_fitness"], run.meta.get("last_metrics", {}), interrupted)


def _validate_best(run: _Run, final_validation: Callable) -> None:
    """Print `final_validation`'s text for the exported best weights (the last EMA when none was saved)."""
    best = run.run_dir / "weights" / "best"
    saved = (best / "meta.json").exists()
    print(f"\nValidating {best if saved else 'the last EMA weights'}...", flush=True)
    variables = load_weights(best)[0] if saved else ckpt.host_ema_variables(run.state)
    placed = (jax.device_put(variables, run.mesh.local_devices[0]) if dist.is_multi_process()
              else replicate(variables, run.mesh))  # as the epochs' EMA was: the evaluator's compiled step is reused
    print(final_validation(run.task, placed, run.data, run.cfg, run.run_dir), flush=True)


class _Tally:
    """Host side of the step metrics: running mean of finite loss items, progress bar, non-finite guard."""

    def __init__(self, saved: dict | None = None):
        """saved: `saved()` of the tally of an epoch interrupted part-way (from a checkpoint's meta), to go on with."""
        self.total, self.count = None, 0
        if saved and saved.get("total") is not None:
            self.total, self.count = np.asarray(saved["total"], np.float64), int(saved["count"])

    def saved(self) -> dict:
        """The running sums as JSON (float64 round-trips exactly), for a checkpoint's meta."""
        return {"total": None if self.total is None else self.total.tolist(), "count": self.count}

    def add(self, pending, bar, run: _Run) -> None:
        metrics, imgsz, _ = pending
        items = np.asarray(jax.device_get(metrics["items"]), np.float64)
        if bool(jax.device_get(metrics["finite"])):
            self.total = items if self.total is None else self.total + items
            self.count += 1
        elif int(jax.device_get(metrics["nonfinite_run"])) >= run.cfg.nonfinite_patience:
            last = run.last.latest_step()
            where = (f"the last good checkpoint is {run.last.directory / str(last)}" if last is not None
                     else "no checkpoint was saved yet")
            raise NonFiniteLossError(f"{run.cfg.nonfinite_patience} consecutive non-finite losses (updates skipped); "
                                     f"lower lr0 or check the data; {where} (run {run.run_dir})")
        if bar.enabled:  # reading the instance count waits for the step
            bar.show(self.mean() if self.total is not None else items, int(metrics["instances"]), imgsz)

    def mean(self):
        return None if self.total is None else self.total / self.count


def _export(path: Path, run: _Run) -> None:
    """EMA weights in the yolojax.models.weights format, for val / predict."""
    spec = run.task.spec()
    meta = {"model": run.task.name, "scale": spec.get("scale", ""), "num_classes": int(run.data.num_classes),
            "names": list(run.data.names), "imgsz": run.cfg.imgsz, "model_config": spec}
    if run.main:
        ckpt.export_ema_weights(path, ckpt.host_ema_variables(run.state), meta)


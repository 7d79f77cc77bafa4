"""One process of a test run of `yolojax.train.loop.train` (tests/test_distributed.py launches one or two of these).

    python tests/train/distributed_worker.py OUT_DIR PLAN key=value ...

The job's shape comes from the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; none for a
single process). PLAN, comma-separated, runs in this process in turn:
  full          train the whole config (project OUT_DIR/full)
  resume@N      train until iteration N (a checkpoint), then resume that run to the end (project OUT_DIR/resume)
  forever       train with epochs=1000, printing STEP lines (a test kills one of the processes)
The task is the toy stand-in (tests/toy.py ToyTask) on the real pipeline (PipelineData) and the real evaluator.
Writes OUT_DIR/process<index>.json: per run, the loss of each step, the positions each train batch was built from,
a hash of each row drawn, the metrics this process's validation computed, and a digest of the state this process
held at each save and after each restore; and OUT_DIR/<run>_p<index>_step<step>.npz, that state's arrays.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the toy stand-ins


def digest(tree) -> str:
    """sha1 over the leaves of a pytree of arrays (in jax.tree order)."""
    import jax

    h = hashlib.sha1()
    for leaf in jax.tree.leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()


def row_hashes(batch: dict) -> list[str]:
    """(b,) sha1 of each row's image and targets."""
    keys = ("images", "bboxes", "cls", "mask")
    return [hashlib.sha1(b"".join(np.ascontiguousarray(batch[k][i]).tobytes() for k in keys)).hexdigest()
            for i in range(len(batch["images"]))]


class Recorder:
    """What this process did, per run (the loop's functions it needs are wrapped in place)."""

    def __init__(self, out_dir: Path, index: int):
        self.out_dir, self.index, self.runs, self.run = out_dir, index, {}, None
        self.print_steps = False

    def start(self, name: str) -> None:
        self.run = name
        self.runs[name] = {"losses": [], "built": [], "drawn": [], "metrics": [], "saved": [], "restored": []}

    def log(self, key: str, value) -> None:
        self.runs[self.run][key].append(value)

    def write(self) -> None:
        path = self.out_dir / f"process{self.index}.json"
        path.write_text(json.dumps(self.runs, indent=1))

    def install(self) -> None:
        import jax
        from flax import serialization

        from yolojax.data import batching
        from yolojax.train import checkpoints, loop

        built, add, save, restore = (batching.BatchOf.map, loop._Tally.add, checkpoints.save_checkpoint,
                                     checkpoints.restore_checkpoint)
        recorder = self

        def batch_map(self_, positions):
            spec = self_.transforms[0]
            if isinstance(spec, batching.TrainSpec):
                recorder.log("built", {"epoch": spec.epoch, "positions": [int(p) for p in positions]})
            return built(self_, positions)

        def tally_add(self_, pending, bar, run):
            recorder.log("losses", float(jax.device_get(pending[0]["loss"])))
            if recorder.print_steps:
                print(f"STEP {len(recorder.runs[recorder.run]['losses'])}", flush=True)
            return add(self_, pending, bar, run)

        def save_checkpoint(manager, state, meta, step=None):
            state_dict = jax.device_get(serialization.to_state_dict(state))  # this process's copy
            done = save(manager, state, meta, step)
            flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state_dict)}
            np.savez(recorder.out_dir / f"{recorder.run}_p{recorder.index}_step{done}.npz", **flat)
            recorder.log("saved", {"step": done, "digest": digest(state_dict), "directory": str(manager.directory)})
            return done

        def restore_checkpoint(manager, template, step=None):
            state, meta = restore(manager, template, step)
            recorder.log("restored", {"step": int(state.iteration), "digest": digest(
                serialization.to_state_dict(state)), "epoch": meta["epoch"], "batch": meta["batch"]})
            return state, meta

        batching.BatchOf.map = batch_map
        loop._Tally.add = tally_add
        checkpoints.save_checkpoint = save_checkpoint
        checkpoints.restore_checkpoint = restore_checkpoint


def make_data(cfg, recorder: Recorder):
    from yolojax.train.feed import PipelineData

    class RecordedData(PipelineData):
        def train_epoch(self, epoch, *, mosaic, start_batch=0, data_state=None):
            batches = super().train_epoch(epoch, mosaic=mosaic, start_batch=start_batch, data_state=data_state)
            for i, batch in enumerate(batches, start_batch):
                recorder.log("drawn", {"epoch": epoch, "batch": i, "rows": row_hashes(batch)})
                yield batch

    return RecordedData(cfg)


def make_evaluate(recorder: Recorder):
    """evaluate_ema (mAP on the whole val split) plus the toy's mean val loss (a number that moves with the
    weights), recorded before the loop shares process 0's numbers."""
    import jax
    import jax.numpy as jnp

    from yolojax.eval.val import evaluate_ema

    @jax.jit
    def box_error(variables, images, bboxes, mask):
        pred = recorder.task.net.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
        mask = mask[..., None]
        target = (bboxes * mask).sum(1) / jnp.maximum(mask.sum(1), 1)
        return jnp.sum((pred - target) ** 2)

    def evaluate(task, ema, data, cfg):
        metrics = evaluate_ema(task, ema, data, cfg)
        errors = [float(box_error(ema, b["images"], b["bboxes"], b["mask"] & b["valid"][:, None]))
                  for b in data.val_batches()]
        metrics["val/box_error"] = float(np.sum(errors))
        recorder.log("metrics", {k: v for k, v in metrics.items() if k != "table"})  # printed lines, not values
        return metrics

    return evaluate


def main(argv: list[str]) -> int:
    out_dir, plan, overrides = Path(argv[0]), argv[1].split(","), argv[2:]

    from yolojax.train.distributed import maybe_initialize_distributed

    maybe_initialize_distributed()  # before anything touches a device
    import jax
    from toy import ToyTask

    from yolojax.train.config import load_config
    from yolojax.train.loop import train

    recorder = Recorder(out_dir, jax.process_index())
    recorder.install()
    recorder.task = ToyTask()
    evaluate = make_evaluate(recorder)
    base = ["cfg=none", "optimizer=SGD", "workers=0", "plots=False", "warmup_epochs=0", "exist_ok=True"]
    for step in plan:
        name, _, arg = step.partition("@")
        project = out_dir / name
        extra = ["epochs=1000"] if name == "forever" else []
        cfg = load_config(base + overrides + extra + [f"project={project}"])
        recorder.start(name)
        recorder.print_steps = name == "forever"
        stop_at = int(arg) if name == "resume" else None
        result = train(cfg, task=recorder.task, data=make_data(cfg, recorder), evaluate=evaluate,
                       stop_at_iteration=stop_at, progress=False)
        if name == "resume":
            cfg = cfg.replace(resume=str(result.run_dir))
            result = train(cfg, task=recorder.task, data=make_data(cfg, recorder), evaluate=evaluate, progress=False)
        recorder.runs[name]["result"] = {"iterations": result.iterations, "epochs": result.epochs_done,
                                         "last_metrics": result.last_metrics, "run_dir": str(result.run_dir)}
        recorder.write()
    print(f"WORKER {jax.process_index()} DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

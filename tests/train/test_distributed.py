"""Data-parallel training over two processes (jax.distributed on this machine's CPU, gloo collectives).

Each test launches distributed_worker.py (beside it): two processes of 2 forced CPU devices each (coordinator
127.0.0.1 on a free port; JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), or one process of 4
devices as the reference, running the real `yolojax.train.loop.train` on the generated shapes dataset through the
real pipeline (PipelineData, workers=0) and the real evaluator (evaluate_ema, plus a mean box error that moves with
the weights).
The model is the toy stand-in (tests/toy.py ToyTask), not YOLOv8n: a 64 px YOLOv8n run of 4 steps took 78 s in
one process on the 2-core machine (compiles), and these tests train seven times (one process once; two processes
sharing the two cores: uninterrupted, interrupted, resumed, and twice losing a process), where a toy run takes
about 10 s. What is tested here (splitting, collectives, checkpoints, validation, failure) does not depend on the
model.

Global batch 8 over 4 devices: each process builds 4 rows, each device gets 2. 16 train images: 2 batches an epoch,
3 epochs (mosaic off in the last), 6 steps.

The first tests run in this process, without distribution: a share of the batch asked for explicitly, and the
helpers of yolojax.train.distributed with one process.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from yolojax.cli.launch import free_port
from yolojax.data import build_dataset
from yolojax.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
BATCH, PROCESSES, STEPS, STOP_AT = 8, 2, 6, 3
BASE = ["cfg=none", "optimizer=SGD", "workers=0", "plots=False", "warmup_epochs=0", "exist_ok=True"]
# summing the gradients of 4 devices across two processes (gloo) rounds differently from one process's all-reduce
LOSS_RTOL, STATE_RTOL, STATE_ATOL = 1e-5, 1e-5, 1e-5
LAUNCH_TIMEOUT_S = 300
DEATH_BOUND_S = 60
HEARTBEAT_TIMEOUT_S = 10


def overrides(data_yaml):
    return [f"data={data_yaml}", "imgsz=64", f"batch={BATCH}", "nbs=8", "epochs=3", "close_mosaic=1", "seed=3"]


def launch(out_dir: Path, plan: str, data_yaml, processes: int, env: dict | None = None) -> list[subprocess.Popen]:
    """Start `processes` workers (4 CPU devices in all) writing into out_dir; stdout / stderr to out_dir/log<i>."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("JAX_", "XLA_", "SLURM_", "OMPI_", "YOLOJAX_DISTRIBUTED", "YOLOJAX_HEARTBEAT"))}
    base.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // processes}",
                PYTHONUNBUFFERED="1", YOLOJAX_INIT_TIMEOUT_S="60", **(env or {}))
    if processes > 1:
        base.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}", JAX_NUM_PROCESSES=str(processes))
    procs = []
    for index in range(processes):
        log = open(out_dir / f"log{index}", "w")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out_dir), plan, *overrides(data_yaml)],
                                      cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                      env={**base, "JAX_PROCESS_ID": str(index)} if processes > 1 else base))
        log.close()
    return procs


def logs(out_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(out_dir.glob("log*")))


def finish(procs: list[subprocess.Popen], out_dir: Path) -> list[dict]:
    """Wait for the workers (killing them after LAUNCH_TIMEOUT_S); each one's record."""
    deadline = time.time() + LAUNCH_TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    codes = [proc.returncode for proc in procs]
    assert codes == [0] * len(procs), f"worker exit codes {codes}\n{logs(out_dir)}"
    return [json.loads((out_dir / f"process{i}.json").read_text()) for i in range(len(procs))]


@pytest.fixture(scope="module")
def data_yaml(shapes_dataset):
    return shapes_dataset(16, 4, 64)


def assert_rows_equal(got: dict, expected: dict, rows: tuple[int, int]) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key][rows[0]:rows[1]], err_msg=key)


@pytest.mark.parametrize("rows", [(0, 4), (4, 8), (2, 5), (7, 8)])
def test_a_share_of_the_batch_equals_those_rows_of_the_whole_batch(data_yaml, rows):
    cfg = load_config(BASE + overrides(data_yaml) + ["degrees=5", "fliplr=0.5", "mixup=0.5"])
    dataset = build_dataset(cfg, "train", seed=3)
    for epoch in (0, 2):  # mosaic on, then off (close_mosaic)
        whole = list(dataset.iterator(epoch, workers=0))
        share = list(dataset.iterator(epoch, workers=0, rows=rows))
        assert len(share) == len(whole) == 2
        for got, expected in zip(share, whole):
            assert len(got["images"]) == rows[1] - rows[0]
            assert_rows_equal(got, expected, rows)


def test_pipeline_data_of_each_process_gives_its_rows_of_every_batch(data_yaml):
    from yolojax.train.feed import PipelineData

    cfg = load_config(BASE + overrides(data_yaml))
    whole = list(PipelineData(cfg, process=(0, 1)).train_epoch(1, mosaic=True))
    for index in range(4):  # process 3 through a grain worker process
        data = PipelineData(cfg.replace(workers=int(index == 3)), process=(index, 4))
        assert data.rows == (2 * index, 2 * index + 2) and data.batches_per_epoch == 2
        for got, expected in zip(data.train_epoch(1, mosaic=True, start_batch=0), whole, strict=True):
            assert_rows_equal(got, expected, data.rows)
        data.close()


def test_a_batch_that_does_not_split_over_the_processes_is_a_clear_error(data_yaml):
    from yolojax.train.feed import PipelineData, process_rows

    assert process_rows(12, 2, 3) == (8, 12)
    with pytest.raises(ValueError, match=r"batch=8 does not split over 3 processes"):
        PipelineData(load_config(BASE + overrides(data_yaml)), process=(0, 3))
    dataset = build_dataset(load_config(BASE + overrides(data_yaml)), "train", seed=3)
    with pytest.raises(ValueError, match=r"rows=\(4, 9\): not a non-empty range of a batch of 8"):
        dataset.dataset(0, rows=(4, 9))
    with pytest.raises(ValueError, match=r"only train batches"):
        build_dataset(load_config(BASE + overrides(data_yaml)), "val", seed=3).dataset(0, rows=(0, 4))


def test_device_rendered_mosaics_need_whole_device_groups(data_yaml):
    cfg = load_config(BASE + overrides(data_yaml) + ["warp_on_device=true", "hsv_on_device=true"])
    dataset = build_dataset(cfg, "train", seed=3)  # one CPU device here: a group is the whole batch of 8
    with pytest.raises(ValueError, match=r"whole groups of 8"):
        dataset.dataset(0, rows=(0, 4))
    assert len(next(dataset.iterator(0, workers=0, rows=(0, 8)))["images"]) == 8


def test_the_job_comes_from_the_environment_with_bounded_timeouts(monkeypatch):
    from yolojax.train import distributed as dist

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "YOLOJAX_DISTRIBUTED",
                 "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "YOLOJAX_HEARTBEAT_TIMEOUT_S", "YOLOJAX_INIT_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    assert dist.maybe_initialize_distributed() is False  # nothing describes a job: one process, nothing joined
    assert dist.initialize_arguments() == {"heartbeat_timeout_seconds": 100, "initialization_timeout": 300}
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    monkeypatch.setenv("YOLOJAX_HEARTBEAT_TIMEOUT_S", "20")
    assert dist.initialize_arguments() == {"heartbeat_timeout_seconds": 20, "initialization_timeout": 300,
                                           "num_processes": 4, "process_id": 3}
    monkeypatch.setenv("JAX_PROCESS_ID", "4")
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID=4 is not in 0..JAX_NUM_PROCESSES-1 \(3\)"):
        dist.initialize_arguments()
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match=r"JAX_NUM_PROCESSES and JAX_PROCESS_ID go together"):
        dist.initialize_arguments()


def test_with_one_process_the_agreement_helpers_are_the_identity():
    from yolojax.train import distributed as dist

    metrics = {"fitness": 0.1 + 0.2, "names": ["a"]}
    assert dist.from_main(metrics) is metrics
    assert dist.any_process(True) is True and dist.any_process(False) is False
    tree = {"w": np.ones(3)}
    assert dist.process_local(tree) is tree


def global_batches(data_yaml, epochs: int) -> dict:
    """(epoch, batch) -> (b,) row hashes of the whole global batch, built in this process."""
    from distributed_worker import row_hashes

    dataset = build_dataset(load_config(BASE + overrides(data_yaml)), "train", seed=3)
    return {(e, k): row_hashes(batch) for e in range(epochs)
            for k, batch in enumerate(dataset.iterator(e, workers=0))}


def load_state(out_dir: Path, run: str, index: int, step: int) -> dict:
    with np.load(out_dir / f"{run}_p{index}_step{step}.npz") as f:
        return dict(f)


def assert_states_close(got: dict, expected: dict, rtol=STATE_RTOL, atol=STATE_ATOL) -> None:
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


def check_matches_one_process(two: list[dict], one: dict, out2: Path, out1: Path) -> None:
    """(a) per-step losses and the final state (params, BN statistics, EMA, momentum) of the 2-process run equal
    those of one process with 4 devices, within float32 summation-order rounding."""
    for record in two:
        assert len(record["full"]["losses"]) == STEPS
        np.testing.assert_allclose(record["full"]["losses"], one["full"]["losses"], rtol=LOSS_RTOL)
    assert_states_close(load_state(out2, "full", 0, STEPS), load_state(out1, "full", 0, STEPS))
    for i in range(PROCESSES):  # the replicated state is the same on every process, bit for bit
        assert [s["digest"] for s in two[i]["full"]["saved"]] == [s["digest"] for s in two[0]["full"]["saved"]]


def check_each_process_built_its_share(two: list[dict], data_yaml) -> None:
    """(b) every train batch a process built came from its rows [i*b/P, (i+1)*b/P) alone; the rows it drew equal
    those rows of the global batch; together the processes' rows are the whole batch, without overlap."""
    share = BATCH // PROCESSES
    for i, record in enumerate(two):
        for built in record["full"]["built"]:
            first = built["positions"][0] - built["positions"][0] % BATCH
            assert built["positions"] == list(range(first + i * share, first + (i + 1) * share)), (i, built)
    expected = global_batches(data_yaml, 3)
    drawn = [{(d["epoch"], d["batch"]): d["rows"] for d in record["full"]["drawn"]} for record in two]
    assert set(drawn[0]) == set(drawn[1]) == set(expected)
    for key, rows in expected.items():
        shares = [drawn[i][key] for i in range(PROCESSES)]
        assert shares[0] + shares[1] == rows, key
        assert not set(shares[0]) & set(shares[1]), key


def check_one_checkpoint_restored_by_both(two: list[dict], out2: Path) -> None:
    """(c) one checkpoint per save (files from process 0 only), one run directory, restored by both processes at the
    interrupted iteration, and the resumed run equal to the uninterrupted one."""
    for run in ("full", "resume"):
        assert sorted(p.name for p in (out2 / run).iterdir()) == ["train"]  # process 0 picked it for both
        weights = out2 / run / "train" / "weights"
        assert not [p for p in weights.rglob("*") if "process_1" in p.name], "process 1 wrote checkpoint files"
    last = out2 / "resume" / "train" / "weights" / "ckpt_last"
    assert sorted(int(p.name) for p in last.iterdir() if p.name.isdigit()) == [4, 6]  # max_to_keep=2
    at_stop = [next(s for s in r["resume"]["saved"] if s["step"] == STOP_AT) for r in two]
    for i, record in enumerate(two):
        restored = record["resume"]["restored"]
        assert [(r["step"], r["epoch"], r["batch"]) for r in restored] == [(STOP_AT, 1, 1)]
        assert restored[0]["digest"] == at_stop[i]["digest"] == at_stop[0]["digest"]
        # the same computation in the same order: equal to float32 rounding (bit-identical when this was written)
        np.testing.assert_allclose(record["resume"]["losses"], record["full"]["losses"], rtol=1e-6, atol=0)
        assert_states_close(load_state(out2, "resume", i, STEPS), load_state(out2, "full", i, STEPS), 1e-6, 1e-7)
        assert record["resume"]["result"]["iterations"] == STEPS


def check_validation_agrees(two: list[dict], one: dict) -> None:
    """(d) each process validated the whole val split itself: the same metrics on both (exactly), and the run's
    results are those numbers; close to the one-process run's."""
    for run in ("full", "resume"):
        assert two[0][run]["metrics"] == two[1][run]["metrics"]
        assert two[0][run]["result"]["last_metrics"] == two[1][run]["result"]["last_metrics"] \
            == two[0][run]["metrics"][-1]
    assert len(two[0]["full"]["metrics"]) == 3
    for got, expected in zip(two[0]["full"]["metrics"], one["full"]["metrics"]):
        assert got.keys() == expected.keys()
        np.testing.assert_allclose([got[k] for k in expected], [expected[k] for k in expected], rtol=1e-5, atol=1e-7)


def test_two_processes_train_like_one_each_building_its_share_with_one_checkpoint(tmp_path, data_yaml):
    out1, out2 = tmp_path / "one", tmp_path / "two"
    (one,) = finish(launch(out1, "full", data_yaml, processes=1), out1)
    two = finish(launch(out2, f"full,resume@{STOP_AT}", data_yaml, processes=PROCESSES), out2)
    check_matches_one_process(two, one, out2, out1)
    check_each_process_built_its_share(two, data_yaml)
    check_one_checkpoint_restored_by_both(two, out2)
    check_validation_agrees(two, one)


def wait_for_line(path: Path, pattern: str, procs: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and re.search(pattern, path.read_text()):
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.1)
    for p in procs:
        p.kill()
    pytest.fail(f"no {pattern!r} in {path.name} within {timeout} s\n{logs(path.parent)}")


@pytest.mark.parametrize("victim", [1, 0], ids=["worker_dies", "coordinator_dies"])
def test_when_a_process_dies_the_other_stops_with_an_error_in_bounded_time(tmp_path, data_yaml, victim):
    """(e) SIGKILL one process mid-run (after its third step): the other exits non-zero, naming the cause, within
    DEATH_BOUND_S instead of waiting for a peer that will never come. A collective in flight fails at once (gloo:
    connection closed); JAX's coordination service then ends the process (heartbeat timeout, or the coordinator
    gone)."""
    procs = launch(tmp_path, "forever", data_yaml, processes=PROCESSES,
                   env={"YOLOJAX_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S)})
    wait_for_line(tmp_path / f"log{victim}", r"STEP 3\b", procs, LAUNCH_TIMEOUT_S)
    procs[victim].send_signal(signal.SIGKILL)
    killed = time.time()
    survivor = procs[1 - victim]
    try:
        code = survivor.wait(timeout=DEATH_BOUND_S)
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail(f"the surviving process still ran {DEATH_BOUND_S} s after its peer died\n{logs(tmp_path)}")
    finally:
        procs[victim].wait()
    elapsed = time.time() - killed
    output = (tmp_path / f"log{1 - victim}").read_text()
    assert code != 0, output[-3000:]
    assert re.search(r"another task died|heartbeat|Connection (closed|reset) by peer", output), output[-3000:]
    assert "WORKER" not in output  # it did not finish the run as if nothing happened
    print(f"survivor exited with {code} {elapsed:.1f} s after its peer was killed")

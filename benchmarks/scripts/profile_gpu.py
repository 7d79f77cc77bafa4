"""Where the GPU time goes: a device trace of batch-1 inference or of the training step, summarised per kernel.

    python benchmarks/scripts/profile_gpu.py infer [--batch 1]     # YOLOv8 forward + NMS (predict settings)
    python benchmarks/scripts/profile_gpu.py train [--batch 64]                # the full train step (bench_train's)

Each run traces `--calls` calls with `jax.profiler.trace(create_perfetto_trace=True)` and reads the Perfetto JSON
back: per call, the wall time, the number of GPU kernels / copies, the time the GPU was busy (union of its
intervals) and the top kernels by total time. XLA flags come from the environment (XLA_FLAGS), so flag variants are
separate runs. Writes `--out` (JSON) and prints a short table.
"""
from __future__ import annotations

import argparse
import collections
import faulthandler
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from yolojax.bench.timing import median_ms, patch_constants, queued_ms  # noqa: E402
from yolojax.xla_flags import apply_default_xla_flags  # noqa: E402


def events_by_process(trace_dir: str) -> dict[str, list[dict]]:
    """Complete ('X') events of every process (devices and the host) in the Perfetto trace under `trace_dir`."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    out: dict[str, list[dict]] = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("dur") is not None:
            out[names.get(e.get("pid"), "")].append(e)
    return dict(out)


def is_device(process: str) -> bool:
    return "/device:" in process and "CPU" not in process


def device_events_by_device(trace_dir: str) -> dict[str, list[dict]]:
    """Complete ('X') events of each device (GPU) process in the Perfetto trace under `trace_dir`, by device name."""
    return {name: events for name, events in events_by_process(trace_dir).items() if is_device(name)}


def host_summary(trace_dir: str, calls: int, top: int = 25, native_only: bool = False) -> list[dict]:
    """The host's side of the traced calls: its longest event names by total time per call (dispatch, thunk
    launches, waits), with counts, so a dispatch-bound step shows where the host time goes. native_only: leave out
    the Python tracer's events (names starting with "$"), e.g. to see XLA's compile phases."""
    per_name = collections.defaultdict(lambda: [0, 0.0, set()])
    for process, events in events_by_process(trace_dir).items():
        if is_device(process):
            continue
        for e in events:
            if native_only and e["name"].startswith("$"):
                continue
            entry = per_name[e["name"][:100]]
            entry[0] += 1
            entry[1] += e["dur"]
            entry[2].add(e.get("tid"))
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"name": name, "count_per_call": n / calls, "ms_per_call": us / calls / 1e3, "threads": len(tids)}
            for name, (n, us, tids) in ranked]


def device_events(trace_dir: str) -> list[dict]:
    """Complete ('X') events of every device (GPU) process in the Perfetto trace under `trace_dir`."""
    return [e for events in device_events_by_device(trace_dir).values() for e in events]


def busy_us(events: list[dict]) -> float:
    """Length of the union of the events' [ts, ts + dur) intervals, microseconds."""
    total, end = 0.0, -float("inf")
    for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def summarise(events: list[dict], calls: int, wall_ms: float, top: int = 25) -> dict:
    """Per-call kernel count, busy time and the top kernels (name, calls per step, ms per step)."""
    per_name = collections.defaultdict(lambda: [0, 0.0])
    for e in events:
        per_name[e["name"]][0] += 1
        per_name[e["name"]][1] += e["dur"]
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])
    span_us = (max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)) if events else 0.0
    return {
        "calls_traced": calls, "wall_ms_per_call": wall_ms,
        "device_events_per_call": len(events) / calls,
        "device_busy_ms_per_call": busy_us(events) / calls / 1e3,
        "device_span_ms_per_call": span_us / calls / 1e3,
        "kernel_sum_ms_per_call": sum(v[1] for v in per_name.values()) / calls / 1e3,
        "top": [{"name": name[:160], "count_per_call": n / calls, "ms_per_call": us / calls / 1e3}
                for name, (n, us) in ranked[:top]],
    }


SHAPE = re.compile(r"\b(pred|[su](?:8|16|32|64)|f16|bf16|f32|f64)\[([\d,]*)\]")
ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
              "s64": 8, "u64": 8, "f64": 8}
INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
# peak HBM bandwidth, bytes/s, of the cards the lent machines have (the memory-traffic floor's denominator)
PEAK_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def hlo_instructions(text: str) -> dict:
    """The optimized HLO's instructions outside fused computations: opcode, bytes read + written (every shape in the
    operands and the result) and the op_name of its metadata. Returns {"by_name": kernel-style name (dots ->
    underscores) -> info, "by_site": (computation, name) -> info, "callee": calling instruction -> computation}:
    fusions inside different command buffers (CUDA graphs) may share a name, the calling site tells them apart."""
    by_name, by_site, callee, skip, computation, root_names = {}, {}, {}, False, "", {}
    for line in text.splitlines():
        if line and not line[0].isspace():  # a computation header
            computation = line.split()[0].lstrip("%")
            if computation == "ENTRY":
                computation = line.split()[1].lstrip("%")
            skip = computation.startswith(("fused", "region", "wrapped"))
            continue
        if skip and line.lstrip().startswith("ROOT") and 'op_name="' in line:
            root_names[computation] = re.search(r'op_name="([^"]+)"', line).group(1)
        m = INSTRUCTION.match(line)
        if skip or not m:
            continue
        body = re.split(r", (?:metadata|backend_config|calls|kind|custom_call_target|to_apply)=", m.group(2))[0]
        opcode = re.search(r"\s([a-z][\w\-]*)\(", body)
        nbytes = sum(ITEM_BYTES[t] * (int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1)
                     for t, dims in SHAPE.findall(body))
        op_name = re.search(r'op_name="([^"]+)"', m.group(2))
        target = re.search(r'custom_call_target="([^"]+)"', m.group(2))
        called = re.search(r"(?:calls|to_apply)=%?([\w.\-]+)", m.group(2))
        name = m.group(1).replace(".", "_")
        info = {"opcode": (opcode.group(1) if opcode else "?") + (f":{target.group(1)}" if target else ""),
                "bytes": nbytes, "op_name": op_name.group(1)[-120:] if op_name else "",
                "calls": called.group(1) if called else ""}
        by_name[name] = by_site[(computation, name)] = info
        if called:
            callee[name] = called.group(1)
    for info in by_site.values():  # a fusion's metadata often sits on its fused computation's root only
        info["op_name"] = info["op_name"] or root_names.get(info["calls"], "")[-120:]
    return {"by_name": by_name, "by_site": by_site, "callee": callee}


def resolve(event: dict, hlo: dict) -> tuple[str, dict]:
    """The HLO instruction a trace event ran: (key, info). Kernels inside a command buffer are named after their
    fusion; the command buffer's own instruction names the computation that holds it."""
    op = ((event.get("args") or {}).get("hlo_op") or event["name"]).replace(".", "_")
    if op.startswith("command_buffer"):
        kernel = event["name"].replace(".", "_")
        info = hlo["by_site"].get((hlo["callee"].get(op, ""), kernel)) or hlo["by_name"].get(kernel, {})
        return f"{op}/{kernel}", info
    return op, hlo["by_name"].get(op, {})


def layer_kind(kernel: str, info: dict) -> str:
    """Coarse class of a kernel's work from its HLO op_name: which part of the step it belongs to."""
    op_name, low = info.get("op_name", ""), kernel.lower()
    backward = "transpose(" in op_name
    side = " (backward)" if backward else " (forward)"
    if "cudnn" in info.get("opcode", "") or any(k in low for k in ("xmma", "cutlass", "convolve", "nhwc")):
        kind = "wgrad" if ("wgrad" in low or "bw-filter" in op_name) else "dgrad" if "dgrad" in low else "fprop"
        return f"convolution {kind}"
    if "YOLOv8" in op_name:
        if "/bn/" in op_name:
            return "BatchNorm + SiLU" + side
        if any(k in op_name for k in ("concatenate", "slice", "/pad", "dynamic")):
            return "concat / split / pad" + side
        if "add_any" in op_name or op_name.endswith("/add"):
            return "residual and branch sums" + side
        if "/conv/" in op_name:
            return "convolution glue (cast, pad, layout)" + side
        return "model, other" + side
    if op_name.startswith(("jit(local_step)/jvp(", "jit(local_step)/transpose(")):
        return "loss + assigner" + side
    if not op_name:
        return "unattributed (" + category(kernel, info) + ")"
    return "update: optimizer, EMA, exchange, checks"


def category(name: str, hlo: dict | None) -> str:
    low = name.lower()
    if "nccl" in low:
        return "collective"
    if any(k in low for k in ("xmma", "cudnn", "cutlass", "convolve", "nhwc", "implicit_gemm", "conv2d")):
        return "convolution (cuDNN)"
    if any(k in low for k in ("nvjet", "gemm", "cublas", "sm90_", "sm80_")):
        return "matmul (cuBLAS)"
    if "scatter" in low:
        return "scatter"
    if "reduce" in low:
        return "reduction fusion"
    if low.startswith(("loop_", "wrapped_", "input_")):
        return "elementwise fusion"
    if "transpose" in low or low.startswith("copy"):
        return "copy / transpose"
    if "memcpy" in low or "memset" in low:
        return "memcpy / memset"
    if hlo and "triton" in hlo.get("opcode", ""):
        return "triton"
    return "other"


def attribute(events: list[dict], calls: int, hlo: dict, peak: float | None, top: int = 60) -> dict:
    """Kernel time by category and by layer kind, and the top kernels with their HLO instruction's bytes, achieved
    bandwidth and op_name. The memory-traffic floor sums the bytes of every HLO instruction that ran (per launch)."""
    by_cat, by_kind = collections.defaultdict(float), collections.defaultdict(float)
    per_site = collections.defaultdict(lambda: [0, 0.0, None, {}])
    for e in events:
        key, info = resolve(e, hlo)
        by_cat[category(e["name"], info)] += e["dur"]
        by_kind[layer_kind(e["name"], info)] += e["dur"]
        row = per_site[(e["name"], key)]
        row[0] += 1
        row[1] += e["dur"]
        row[3] = info
    floor_bytes = sum(info.get("bytes", 0) * n for n, _, _, info in per_site.values())
    ranked = sorted(per_site.items(), key=lambda kv: -kv[1][1])
    rows = []
    for (name, key), (n, us, _, info) in ranked[:top]:
        gbps = info.get("bytes", 0) * n / (us * 1e-6) / 1e9 if us else 0.0
        rows.append({"kernel": name[:90], "hlo": key, "ms_per_call": us / calls / 1e3, "count_per_call": n / calls,
                     "mb_per_call": info.get("bytes", 0) * n / calls / 1e6, "gb_per_s": gbps,
                     "opcode": info.get("opcode", ""), "op_name": info.get("op_name", "")})
    floor = {"traffic_mb_per_call": floor_bytes / calls / 1e6}
    if peak:
        floor["memory_floor_ms_per_call"] = floor_bytes / calls / peak * 1e3
    ms = lambda table: {k: v / calls / 1e3 for k, v in sorted(table.items(), key=lambda kv: -kv[1])}  # noqa: E731
    return {"by_category_ms": ms(by_cat), "by_layer_kind_ms": ms(by_kind), "attributed": rows, **floor,
            "event_arg_keys": sorted({k for e in events[:200] for k in (e.get("args") or {})})}


GAP_BUCKETS_US = (2, 5, 20, 100)


def idle_gaps(events: list[dict], calls: int, hlo: dict, top: int = 30) -> dict:
    """Where the device waits between kernels: the idle stretches of the union of `events` (queued calls), per call
    by length bucket (microseconds), and the pairs (kernel before, kernel after, each as its HLO op_name's tail)
    with the most idle time per call."""
    buckets = collections.Counter()
    pairs = collections.defaultdict(lambda: [0, 0.0])
    end, last = None, None
    for e in sorted(events, key=lambda e: e["ts"]):
        if end is not None and e["ts"] > end:
            gap = e["ts"] - end
            buckets[next((f"<{b}" for b in GAP_BUCKETS_US if gap < b), f">={GAP_BUCKETS_US[-1]}")] += gap
            site = tuple(f"{x['name'][:40]} | {resolve(x, hlo)[1].get('op_name', '')[-70:]}" for x in (last, e))
            pairs[site][0] += 1
            pairs[site][1] += gap
        if end is None or e["ts"] + e["dur"] > end:
            end, last = e["ts"] + e["dur"], e
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1][1])[:top]
    return {"idle_ms_per_call": sum(buckets.values()) / calls / 1e3,
            "idle_ms_by_gap_us": {k: v / calls / 1e3 for k, v in sorted(buckets.items())},
            "idle_top": [{"before": a, "after": b, "count_per_call": n / calls, "us_per_call": us / calls}
                         for (a, b), (n, us) in ranked]}


def queued_trace(fn, sync, calls: int) -> list[dict]:
    """Device events of `calls` calls of fn queued back to back (one sync at the end), the first call left out."""
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            results = [fn() for _ in range(calls + 1)]
            sync(results[-1])
        events = sorted(device_events(tmp), key=lambda e: e["ts"])
    per_call = len(events) // (calls + 1)
    return events[per_call:]


def peak_bandwidth() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((v for k, v in PEAK_BANDWIDTH.items() if k in kind), None)


def trace(fn, sync, calls: int) -> tuple[list[dict], float, list[dict]]:
    """`calls` synced calls of fn under the profiler: (device events, wall ms per call, `host_summary`)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                sync(fn())
        wall_ms = (time.perf_counter() - start) / calls * 1e3
        return device_events(tmp), wall_ms, host_summary(tmp, calls)


def with_variables(how: str, variables, *fns):
    """Each fn(variables, images) jitted with the variables passed as `how` says: "tree" (one argument per array),
    "flat" (one buffer, sliced back into the tree inside the program) or "constant" (baked into the program).
    The last two return functions called as fn((), images)."""
    if how == "tree":
        return [jax.jit(fn) for fn in fns]
    if how in ("folded", "prepared", "packed"):
        return prepared_weights(variables, how != "folded", fns, pack=how == "packed")
    leaves, treedef = jax.tree.flatten(variables)
    if how == "constant":
        return [jax.jit(lambda _, images, fn=fn: fn(variables, images)) for fn in fns]
    flat = jnp.concatenate([leaf.ravel().astype(jnp.float32) for leaf in leaves])
    sizes = [leaf.size for leaf in leaves]
    offsets = np.cumsum([0, *sizes])

    def unflatten(buffer):
        return jax.tree.unflatten(treedef, [buffer[o:o + n].reshape(leaf.shape).astype(leaf.dtype)
                                            for o, n, leaf in zip(offsets, sizes, leaves)])

    jitted = [jax.jit(lambda buffer, images, fn=fn: fn(unflatten(buffer), images)) for fn in fns]
    return [lambda _, images, f=f: f(flat, images) for f in jitted]


def prepared_weights(variables, kernels_ohwi: bool, fns, pack: bool = False):
    """`with_variables` for "folded" (BatchNorm folded into bfloat16 kernels: `yolojax.models.inference`),
    "prepared" (also in cuDNN's OHWI filter layout, as predict and val run them) and "packed" (those as one buffer
    per dtype)."""
    from yolojax.models.inference import fold_batchnorm, folded_forward

    prepared = jax.device_put(fold_batchnorm(variables, kernel_dtype=jnp.bfloat16, ohwi=kernels_ohwi, pack=pack))

    def wrap(fn):
        def run(v, images):
            with folded_forward(v):
                return fn(v.tree(), images)
        jitted = jax.jit(run)
        return lambda _, images: jitted(prepared, images)

    return [wrap(fn) for fn in fns]


def busy_variables(variables, rng: np.random.Generator):
    """Random variables with a signal that survives the depth (every kernel x 2.2, BatchNorm statistics drawn at
    random, as bench_infer's busy load), so that scores differ between anchors."""
    def busy(path, leaf):
        name = jax.tree_util.keystr(path)
        if "'kernel'" in name:
            return leaf * 2.2
        if "'var'" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        if "'mean'" in name:
            return jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype)
        return leaf
    return jax.tree_util.tree_map_with_path(busy, variables)


def profile_infer(args) -> dict:
    from yolojax.detectors.postprocess import non_max_suppression
    from yolojax.models.yolov8 import YOLOv8, init_variables

    model = YOLOv8(args.scale, 80, dtype=jnp.bfloat16)
    variables = jax.device_put(init_variables(model, jax.random.PRNGKey(0), (args.imgsz, args.imgsz)))
    rng = np.random.default_rng(0)
    x = jax.device_put(jnp.asarray(rng.random((args.batch, args.imgsz, args.imgsz, 3)), jnp.bfloat16))
    if args.candidates:  # conf set so that about that many anchors of image 0 enter NMS, as a trained model's
        variables = busy_variables(variables, rng)
        best = np.asarray(jax.jit(lambda v, images: model.apply(v, images, train=False))(variables, x)[1][0]).max(-1)
        args.conf = float(np.sort(best)[-args.candidates - 1])

    def nms_fn(boxes_xywh, class_probs):
        return non_max_suppression(boxes_xywh, class_probs, conf_thres=args.conf, iou_thres=0.7, max_det=300)

    def detect_fn(v, images):
        # a random model scores ~1e-4; conf 0 + max_det keeps NMS busy the way a trained model's output does
        return nms_fn(*model.apply(v, images, train=False))

    def read_arguments(v, images):  # one kernel reading an element of every array: the per-argument host cost
        return sum(leaf.ravel()[0].astype(jnp.float32) for leaf in jax.tree.leaves(v)) + images[0, 0, 0, 0]

    detect, forward, arguments = with_variables(args.variables, variables, detect_fn,
                                                lambda v, images: model.apply(v, images, train=False),
                                                read_arguments)
    if args.variables != "tree":  # the same function of the images alone from here on
        variables = ()

    start = time.perf_counter()
    jax.block_until_ready(detect(variables, x))
    compile_s = time.perf_counter() - start
    raw = jax.block_until_ready(forward(variables, x))
    nms_alone = jax.jit(nms_fn)
    images_only = jax.jit(lambda images: images[0, 0, 0, 0] + 1)  # the same with one argument
    out = {"what": "infer", "batch": args.batch, "imgsz": args.imgsz, "compile_s": compile_s, "conf": args.conf,
           "forward_ms": median_ms(lambda: forward(variables, x), jax.block_until_ready, 200, 20),
           "detect_ms": median_ms(lambda: detect(variables, x), jax.block_until_ready, 200, 20),
           "nms_alone_ms": median_ms(lambda: nms_alone(*raw), jax.block_until_ready, 200, 20),
           "arguments_ms": median_ms(lambda: arguments(variables, x), jax.block_until_ready, 200, 20),
           "images_only_ms": median_ms(lambda: images_only(x), jax.block_until_ready, 200, 20),
           "detections_per_image": float(np.asarray(detect(variables, x)["valid"]).sum(-1).mean())}
    events, wall, host = trace(lambda: detect(variables, x), jax.block_until_ready, args.calls)
    # kernels are joined to HLO instructions for the per-array program only (the others' names differ)
    no_hlo = {"by_name": {}, "by_site": {}, "callee": {}}
    hlo = hlo_instructions(detect.lower(variables, x).compile().as_text()) if args.variables == "tree" else no_hlo
    nms_events, nms_wall, nms_host = trace(lambda: nms_alone(*raw), jax.block_until_ready, args.calls)
    return {**out, **summarise(events, args.calls, wall), **attribute(events, args.calls, hlo, peak_bandwidth()),
            "host_top": host, "nms_alone": {**summarise(nms_events, args.calls, nms_wall), "host_top": nms_host}}


def profile_train(args) -> dict:
    from yolojax.bench.train_step import SteppedState, padded_targets, sgd_plan
    from yolojax.detectors import YOLOv8Task
    from yolojax.train.optim import hyper_at
    from yolojax.train.setup import build_training
    from yolojax.train.step import replicate, shard_batch

    task = YOLOv8Task(scale=args.scale, num_classes=80, dtype=jnp.bfloat16)
    plan = sgd_plan(args.batch)
    run = build_training(task, plan, (args.imgsz, args.imgsz))
    mesh, state = run.mesh, run.state
    hyper = replicate(hyper_at(plan, 10_000, 10), mesh)
    rng = np.random.default_rng(0)
    cls, bboxes, mask = padded_targets(rng, args.batch, 8, 16, 80)
    images = rng.integers(0, 256, size=(args.batch, args.imgsz, args.imgsz, 3), dtype=np.uint8)
    data = shard_batch({"images": images, "bboxes": bboxes, "cls": cls, "mask": mask}, mesh)
    compile_host = None
    if args.trace_compile:  # the host's events while XLA compiles: passes, autotuning, LLVM, ptxas
        with tempfile.TemporaryDirectory() as tmp:
            with jax.profiler.trace(tmp, create_perfetto_trace=True):
                stepped = SteppedState(run.step, state, data, hyper)
            compile_host = host_summary(tmp, 1, top=60, native_only=True)
    else:
        stepped = SteppedState(run.step, state, data, hyper)
    one, compile_s = stepped.one, stepped.compile_s

    ms = median_ms(one, jax.block_until_ready, 20, 5)
    queued = queued_ms(one, jax.block_until_ready, 30, rounds=args.queued_rounds, warmup=3)
    events, wall, host = trace(one, jax.block_until_ready, args.calls)
    cost = stepped.compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost
    hlo_text = stepped.compiled.as_text()
    hlo = hlo_instructions(hlo_text)
    events_queued = queued_trace(one, jax.block_until_ready, args.calls) if args.gaps or args.dump else []
    gaps = idle_gaps(events_queued, args.calls, hlo) if args.gaps else {}
    if args.dump:  # for reading offline: the compiled step and one queued step's device events in launch order
        os.makedirs(args.dump, exist_ok=True)
        Path(args.dump, "step_hlo.txt").write_text(hlo_text)
        keep = ("name", "ts", "dur", "args")
        Path(args.dump, "step_events.json").write_text(json.dumps(
            [{k: e.get(k) for k in keep} for e in events_queued[:len(events_queued) // args.calls]]))
    return {"what": "train", "scale": args.scale, "batch": args.batch, "imgsz": args.imgsz, "compile_s": compile_s,
            "compile_phases_s": getattr(stepped, "phases_s", None), "ms_per_step": ms, "queued_ms_per_step": queued,
            "xla_bytes_accessed_mb": cost.get("bytes accessed", 0) / 1e6, "xla_gflops": cost.get("flops", 0) / 1e9,
            **summarise(events, args.calls, wall, top=40),
            **attribute(events, args.calls, hlo, peak_bandwidth()), "host_top": host,
            **({"compile_host_top": compile_host} if compile_host else {}), **gaps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["infer", "train"])
    parser.add_argument("--scale", default="n")
    parser.add_argument("--batch", type=int, default=None, help="default: 1 for infer, 64 for train")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, default=0.0)
    parser.add_argument("--candidates", type=int, default=0,
                        help="infer: weights with a signal and conf set so that about this many anchors per image "
                        "enter NMS (0: --conf as given, random weights)")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--tag", default="", help="label of this variant (e.g. the XLA flags)")
    parser.add_argument("--queued-rounds", type=int, default=1,
                        help="train: rounds of 30 queued steps; the fastest is reported (one round can catch a slow "
                        "spell of the host: 24-37 ms against 21 ms)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--variables", default="tree",
                        choices=["tree", "flat", "constant", "folded", "prepared", "packed"],
                        help="infer: the weights as one argument per array, one flat buffer, program constants, "
                        "BatchNorm folded (bf16 kernels), folded with kernels in cuDNN's OHWI layout, or those packed "
                        "in one buffer per dtype")
    parser.add_argument("--dump-after", type=float, default=0,
                        help="print every thread's Python stack after this many seconds (where a run hangs)")
    parser.add_argument("--trace-compile", action="store_true",
                        help="train: trace the compile too and report the host's longest compile events")
    parser.add_argument("--gaps", action="store_true",
                        help="train: also trace --calls steps queued back to back and report where the GPU waits "
                        "between kernels (idle by gap length, the kernel pairs around the most idle time)")
    parser.add_argument("--dump", default=None,
                        help="train: write the compiled step's HLO and one queued step's device events to this folder")
    parser.add_argument("--print-top", type=int, default=15, help="kernels printed (all top 40 go to --out)")
    parser.add_argument("--patch", action="append", default=[],
                        help="module.attr=value set before building (A/B of a module constant), repeatable")
    args = parser.parse_args(argv)
    if args.dump_after:
        faulthandler.dump_traceback_later(args.dump_after, exit=False)
    apply_default_xla_flags(job=args.what)  # JAX's backends start at the first computation, after this
    args.batch = args.batch or (1 if args.what == "infer" else 64)
    patch_constants(args.patch)
    result = profile_infer(args) if args.what == "infer" else profile_train(args)
    result.update(tag=args.tag, xla_flags=os.environ.get("XLA_FLAGS", ""), device=jax.devices()[0].device_kind)
    skip = ("top", "attributed", "event_arg_keys", "host_top", "idle_top", "by_category_ms", "by_layer_kind_ms",
            "idle_ms_by_gap_us")
    brief = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k not in skip}
    print(json.dumps(brief))
    for k in skip[5:]:
        if k in result:
            print(k, {c: round(v, 3) for c, v in result[k].items()})
    for row in result.get("idle_top", [])[:args.print_top]:
        print(f"  idle {row['us_per_call']:7.1f} us x{row['count_per_call']:5.1f}  {row['before']}  ->  {row['after']}")
    for row in result.get("attributed", [])[:args.print_top]:
        print(f"  {row['ms_per_call']:7.3f} ms x{row['count_per_call']:5.1f} {row['mb_per_call']:8.1f} MB "
              f"{row['gb_per_s']:6.0f} GB/s {row['kernel'][:48]:48s} {row['opcode'][:24]:24s} {row['op_name'][-70:]}")
    if "attributed" not in result:
        for row in result["top"][:15]:
            print(f"  {row['ms_per_call']:8.3f} ms  x{row['count_per_call']:6.1f}  {row['name'][:110]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tuned convolution algorithms for deterministic GPU training (`yolojax autotune`).

With `--xla_gpu_exclude_nondeterministic_ops` (the train job's `deterministic=True`), XLA's autotuner takes the first
configuration it is offered for every instruction instead of timing the candidates: each convolution runs the
algorithm cuDNN's heuristics rank first, which for the narrow layers of the small models is often not the fastest.
XLA still consults autotuning results loaded from a file (`--xla_gpu_load_autotune_results_from`) before it
selects.

So a tuning compile without the deterministic flag (fusion autotuning off: only the library calls are timed) dumps
its results and its per-candidate log (`--xla_gpu_dump_autotune_results_to`, `--xla_gpu_dump_autotune_logs_to`), and
`conv_results` keeps from those results the convolutions of the kinds asked for, told apart by the log's
instruction text. cuDNN's forward algorithms are deterministic; the ones that accumulate with atomics are among the
gradient algorithms, so `yolojax autotune` keeps the gradient convolutions only when the tuned step repeats bit for bit.
The results are keyed by the device and each instruction's fingerprint: a file tuned for one card, model and batch
shape changes nothing for another, and one file can hold several cards' entries (`merge_results`).
"""
from __future__ import annotations

import re

FORWARD_CONV_TARGETS = ("__cudnn$convForward", "__cudnn$convBiasActivationForward")
GRADIENT_CONV_TARGETS = ("__cudnn$convBackwardInput", "__cudnn$convBackwardFilter")
_FINGERPRINT = re.compile(r'hlo_fingerprint: "([0-9a-f]+)"')
_CALL_TARGET = re.compile(r'custom_call_target=\\"([^\\"]+)\\"')


def top_level_blocks(text: str, name: str) -> list[str]:
    """The `name { ... }` blocks at the top level of a text-format protocol buffer, each as its text."""
    blocks, depth, start = [], 0, None
    for match in re.finditer(r"[{}]|\"(?:[^\"\\]|\\.)*\"", text):
        token = match.group()
        if token == "{":
            if depth == 0 and text[text.rfind("\n", 0, match.start()) + 1:match.start()].strip() == name:
                start = text.rfind("\n", 0, match.start()) + 1
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0 and start is not None:
                blocks.append(text[start:match.end()])
                start = None
    return blocks


def conv_fingerprints(logs_text: str, targets: tuple[str, ...] = FORWARD_CONV_TARGETS) -> set[str]:
    """Fingerprints of the instructions that an autotuning log (`--xla_gpu_dump_autotune_logs_to`, text format)
    shows as convolutions of `targets` (cuDNN custom-call targets)."""
    found = set()
    for block in top_level_blocks(logs_text, "instruction_profiles"):
        fingerprint = _FINGERPRINT.search(block)
        if fingerprint and set(_CALL_TARGET.findall(block)) & set(targets):
            found.add(fingerprint.group(1))
    return found


def conv_results(results_text: str, logs_text: str,
                 targets: tuple[str, ...] = FORWARD_CONV_TARGETS) -> tuple[str, int]:
    """The entries of autotuning results (`--xla_gpu_dump_autotune_results_to`, text format) that are convolutions
    of `targets` according to the log of the same compile, as a results file's text; and how many there are."""
    keep = conv_fingerprints(logs_text, targets)
    kept = []
    for block in top_level_blocks(results_text, "entries"):
        fingerprint = _FINGERPRINT.search(block)
        if fingerprint and fingerprint.group(1) in keep and "backend: CUDNN" in block:
            kept.append(block)
    return "".join(block + "\n" for block in kept), len(kept)


def _entry_key(block: str) -> tuple[str, str]:
    device = re.search(r'device: "([^"]*)"', block)
    fingerprint = _FINGERPRINT.search(block)
    return (device.group(1) if device else "", fingerprint.group(1) if fingerprint else block)


def merge_results(*texts: str) -> str:
    """Results files' entries merged into one file's text, one entry per (device, instruction): a later text's
    entry replaces an earlier one (XLA refuses a file that names an instruction twice)."""
    entries: dict[tuple[str, str], str] = {}
    for text in texts:
        for block in top_level_blocks(text, "entries"):
            entries[_entry_key(block)] = block
    return "".join(block + "\n" for block in entries.values())

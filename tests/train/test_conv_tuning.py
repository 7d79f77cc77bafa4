"""The tuned-convolutions file: which autotuning entries `yolojax autotune` keeps, how files merge, and which jobs load
it. The data files are an excerpt of a real dump (v8n train step, one H100): a fusion, a forward, a weight-gradient
and a data-gradient convolution, with two timed candidates each in the log."""
from pathlib import Path
from types import SimpleNamespace

from yolojax.cli import main
from yolojax.conv_tuning import (
    FORWARD_CONV_TARGETS,
    GRADIENT_CONV_TARGETS,
    conv_fingerprints,
    conv_results,
    merge_results,
    top_level_blocks,
)
from yolojax.train.console import tuning_hint
from yolojax.xla_flags import LOAD_TUNED_FLAG, TUNING_FLAGS, apply_default_xla_flags, tuned_conv_file

DATA = Path(__file__).parent / "data"
FORWARD, WEIGHT_GRAD, DATA_GRAD = ("02a1b16ed852cba177ef9b06bb1741ba", "9d0e55f235ed153b7ddd543e5a06dfcc",
                                   "4edb07d4f65afd70dfdaa71309e06e7a")


def dumps():
    return (DATA / "autotune_results.textproto").read_text(), (DATA / "autotune_logs.textproto").read_text()


def fingerprints(text):
    return {block.split('hlo_fingerprint: "')[1][:32] for block in top_level_blocks(text, "entries")}


def test_the_log_names_each_convolution_kind():
    _, logs = dumps()
    assert conv_fingerprints(logs) == {FORWARD}
    assert conv_fingerprints(logs, GRADIENT_CONV_TARGETS) == {WEIGHT_GRAD, DATA_GRAD}


def test_forward_convolutions_alone_or_with_the_gradients():
    results, logs = dumps()
    assert len(top_level_blocks(results, "entries")) == 4  # the fusion's entry is never kept
    text, count = conv_results(results, logs)
    assert count == 1 and fingerprints(text) == {FORWARD} and "backend: CUDNN" in text
    text, count = conv_results(results, logs, FORWARD_CONV_TARGETS + GRADIENT_CONV_TARGETS)
    assert count == 3 and fingerprints(text) == {FORWARD, WEIGHT_GRAD, DATA_GRAD}


def test_blocks_ignore_braces_inside_strings():
    text = 'entries {\n  hlo: "a{3,2}b}"\n  value { x: 1 }\n}\nother {\n}\nentries {\n  hlo: "{"\n}\n'
    assert top_level_blocks(text, "entries") == ['entries {\n  hlo: "a{3,2}b}"\n  value { x: 1 }\n}',
                                                 'entries {\n  hlo: "{"\n}']


def test_a_later_entry_replaces_an_earlier_one_per_device_and_instruction():
    results, logs = dumps()
    forward, _ = conv_results(results, logs)
    retuned = forward.replace("algo_id: ", "algo_id: 9")
    other_card = forward.replace('device: "', 'device: "ff')
    merged = merge_results(forward, other_card, retuned)
    blocks = top_level_blocks(merged, "entries")
    assert len(blocks) == 2 and retuned.strip() in blocks and other_card.strip() in blocks


def test_training_jobs_load_the_tuned_file_where_it_exists(tmp_path):
    env = {"YOLOJAX_CACHE": str(tmp_path)}
    tuned = tuned_conv_file(env)
    assert tuned.parent == tmp_path / "conv_autotune"
    assert LOAD_TUNED_FLAG not in apply_default_xla_flags(dict(env), job="train", deterministic=True)
    tuned.parent.mkdir(parents=True)
    tuned.write_text("")
    assert LOAD_TUNED_FLAG not in apply_default_xla_flags(dict(env), job="train", deterministic=True)
    tuned.write_text(conv_results(*dumps())[0])
    assert f"{LOAD_TUNED_FLAG}={tuned}" in apply_default_xla_flags(dict(env), job="train", deterministic=True)
    for job in ("infer", "autotune"):  # inference has other shapes; tuning must time every candidate again
        assert LOAD_TUNED_FLAG not in apply_default_xla_flags(dict(env), job=job)
    assert apply_default_xla_flags(dict(env), job="autotune").split() == list(TUNING_FLAGS)


def test_autotune_on_a_cpu_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XLA_FLAGS", "")
    out = tmp_path / "tuned.textproto"
    assert main(["autotune", "imgsz=64", "batch=2", f"out={out}"]) == 2
    assert "only GPUs tune convolution algorithms" in capsys.readouterr().out
    assert not out.exists()


def test_deterministic_gpu_training_without_a_tuned_file_suggests_tuning():
    gpu, cpu = SimpleNamespace(platform="gpu"), SimpleNamespace(platform="cpu")
    assert "yolojax autotune" in tuning_hint(True, [gpu, gpu], "")
    assert tuning_hint(True, [gpu], f"{LOAD_TUNED_FLAG}=/x/tuned.textproto") is None
    assert tuning_hint(False, [gpu], "") is None and tuning_hint(True, [cpu], "") is None

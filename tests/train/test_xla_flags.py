import jax
import pytest

from yolojax.xla_flags import (
    COMMAND_BUFFER_FLAGS,
    DETERMINISTIC_FLAGS,
    TRAIN_FLAGS,
    apply_default_xla_flags,
    deterministic_in,
    enable_compilation_cache,
    flags_for,
    jax_setting,
)


def test_inference_gets_command_buffers_and_user_flags_win():
    env = {"XLA_FLAGS": "--xla_gpu_graph_min_graph_size=7 --xla_dump_to=/tmp/x"}
    value = apply_default_xla_flags(env, job="infer")
    assert "--xla_gpu_graph_min_graph_size=7" in value and "--xla_gpu_graph_min_graph_size=1" not in value
    assert COMMAND_BUFFER_FLAGS[0] in value and "--xla_dump_to=/tmp/x" in value
    assert apply_default_xla_flags(env, job="infer") == value  # idempotent


def test_inference_keeps_while_loops_out_of_cuda_graphs():
    # NMS while-loops inside CUDA graphs gave wrong detections at batch 1 on H200s (check_inference_variables.py)
    command_buffer = [f for f in flags_for("infer") if f.startswith("--xla_gpu_enable_command_buffer=")]
    assert command_buffer == ["--xla_gpu_enable_command_buffer=+CONVOLUTION"]


def test_training_gets_no_cuda_graphs(tmp_path):
    # with the convolutions in CUDA graphs a one-GPU step failed at its first run (cuDNN execution failed while
    # tracing the graph) and the 2-GPU step never finished (CUDA graph destroy error)
    for deterministic in (False, True):
        flags = flags_for("train", deterministic=deterministic)
        assert not any("command_buffer" in f or "graph_min_graph_size" in f for f in flags)
    no_tuned_file = {"YOLOJAX_CACHE": str(tmp_path)}
    assert apply_default_xla_flags(dict(no_tuned_file), job="train").split() == list(TRAIN_FLAGS)
    assert apply_default_xla_flags(dict(no_tuned_file), job="train", deterministic=True).split() == list(
        TRAIN_FLAGS + DETERMINISTIC_FLAGS)


def test_training_turns_the_latency_hiding_scheduler_off_unless_the_user_set_it():
    assert "--xla_gpu_enable_latency_hiding_scheduler=false" in flags_for("train")
    assert not any("latency_hiding" in f for f in flags_for("infer") + flags_for("autotune"))
    mine = {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true"}
    value = apply_default_xla_flags(mine, job="train")
    assert value.split() == ["--xla_gpu_enable_latency_hiding_scheduler=true"]


def test_cli_commands_choose_their_job():
    from yolojax.cli import COMMANDS, JOB_OF_COMMAND

    assert set(JOB_OF_COMMAND) == set(COMMANDS)
    assert JOB_OF_COMMAND["train"] == JOB_OF_COMMAND["bench"] == "train"
    assert JOB_OF_COMMAND["predict"] == JOB_OF_COMMAND["val"] == "infer"
    assert JOB_OF_COMMAND["autotune"] == "autotune"


def test_opt_out_and_unknown_job():
    assert apply_default_xla_flags({"YOLOJAX_XLA_FLAGS": "0"}, job="infer") == ""
    with pytest.raises(ValueError, match="job='serve'"):
        flags_for("serve")


def test_a_jax_setting_holds_inside_its_block_and_is_restored_after_an_error():
    before = jax.config.jax_enable_x64
    with pytest.raises(RuntimeError, match="inside"):
        with jax_setting("jax_enable_x64", not before):
            assert jax.config.jax_enable_x64 is (not before)
            raise RuntimeError("inside")
    assert jax.config.jax_enable_x64 is before


def test_the_deterministic_flag_is_read_from_xla_flags():
    assert deterministic_in("--a=1 " + DETERMINISTIC_FLAGS[0])
    assert deterministic_in("--xla_gpu_exclude_nondeterministic_ops")
    assert not deterministic_in(DETERMINISTIC_FLAGS[0] + " --xla_gpu_exclude_nondeterministic_ops=false")
    assert not deterministic_in("--xla_gpu_exclude_nondeterministic_ops_x=true")


def test_deterministic_compiles_keep_autotuning_results_out_of_the_cache(tmp_path):
    # XLA keys autotuning results by device and instruction, not flags: a deterministic compile read the algorithms
    # a non-deterministic run had picked (another step, other sums; benchmarks/2026-11-27_step_gaps/README.md)
    jaxs_default = "xla_gpu_per_fusion_autotune_cache_dir"  # set here: an earlier test may have run a training job
    min_secs = jax.config.jax_persistent_cache_min_compile_time_secs
    with (jax_setting("jax_persistent_cache_enable_xla_caches", jaxs_default),
          jax_setting("jax_compilation_cache_dir", None),
          jax_setting("jax_persistent_cache_min_compile_time_secs", min_secs)):
        enable_compilation_cache(tmp_path / "plain", {"XLA_FLAGS": "--xla_dump_to=/tmp/x"})
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "plain")
        assert jax.config.jax_persistent_cache_enable_xla_caches == jaxs_default
        enable_compilation_cache(environ={"XLA_FLAGS": DETERMINISTIC_FLAGS[0], "YOLOJAX_CACHE": str(tmp_path)})
        assert jax.config.jax_persistent_cache_enable_xla_caches == "none"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "plain")  # a folder already set is kept

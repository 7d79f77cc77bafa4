from yolojax.xla_flags import DEFAULT_FLAGS, apply_default_xla_flags, with_default_flags


def test_defaults_are_added_once_and_user_flags_win():
    env = {"XLA_FLAGS": "--xla_gpu_graph_min_graph_size=7 --xla_dump_to=/tmp/x"}
    value = apply_default_xla_flags(env)
    assert "--xla_gpu_graph_min_graph_size=7" in value and "--xla_gpu_graph_min_graph_size=1" not in value
    assert DEFAULT_FLAGS[0] in value and "--xla_dump_to=/tmp/x" in value
    assert apply_default_xla_flags(env) == value  # idempotent


def test_opt_out_and_empty_start():
    assert apply_default_xla_flags({"YOLOJAX_XLA_FLAGS": "0"}) == ""
    assert with_default_flags("").split() == list(DEFAULT_FLAGS)

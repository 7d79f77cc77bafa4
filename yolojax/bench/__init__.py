"""Speed benchmarks: our training step against the PyTorch reference's, timed in the same process on one device.

torch is imported here and in `yolojax.convert` (reading reference checkpoints), always inside the functions that
need it, so that training, evaluation and the data pipeline run without it (the TensorBoard logger falls back to
torch's writer only when tensorboardX is missing). `train_step` is the `yolojax bench` command, `reference` times
the reference's step, `timing` holds the wall-clock helpers the benchmark scripts share.
"""

"""EMA of params and BatchNorm statistics vs hand computation and the reference's ModelEMA."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.train.ema import ema_decay, ema_update


def test_decay_ramp_by_hand():
    assert float(ema_decay(1)) == pytest.approx(0.9999 * (1 - math.exp(-1 / 2000)), rel=1e-6)
    assert float(ema_decay(2000)) == pytest.approx(0.9999 * (1 - math.exp(-1)), rel=1e-6)
    assert float(ema_decay(10, decay=0.5, tau=5)) == pytest.approx(0.5 * (1 - math.exp(-2)), rel=1e-6)


def test_two_updates_of_params_and_batch_stats_by_hand():
    ema = {"params": {"w": jnp.array([1.0, 2.0])}, "batch_stats": {"mean": jnp.array([0.0]), "n": jnp.array(3)}}
    model1 = {"params": {"w": jnp.array([3.0, 0.0])}, "batch_stats": {"mean": jnp.array([4.0]), "n": jnp.array(5)}}
    model2 = {"params": {"w": jnp.array([5.0, 1.0])}, "batch_stats": {"mean": jnp.array([2.0]), "n": jnp.array(7)}}
    d1, d2 = 0.9 * (1 - math.exp(-1 / 2)), 0.9 * (1 - math.exp(-2 / 2))
    out = ema_update(ema_update(ema, model1, 1, 0.9, 2.0), model2, 2, 0.9, 2.0)
    w1 = d1 * np.array([1.0, 2.0]) + (1 - d1) * np.array([3.0, 0.0])
    np.testing.assert_allclose(out["params"]["w"], d2 * w1 + (1 - d2) * np.array([5.0, 1.0]), rtol=1e-6)
    m1 = (1 - d1) * 4.0
    np.testing.assert_allclose(out["batch_stats"]["mean"], [d2 * m1 + (1 - d2) * 2.0], rtol=1e-6)
    assert int(out["batch_stats"]["n"]) == 7  # integer leaves are copied, not averaged


@pytest.mark.parity
def test_matches_reference_model_ema_on_a_tiny_bn_model():
    torch = pytest.importorskip("torch")
    from ultralytics.utils.torch_utils import ModelEMA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref = ModelEMA(model)
    names = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point]
    ours = {k: jnp.asarray(model.state_dict()[k].numpy()) for k in names}
    for updates in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model(torch.randn(2, 3, 8, 8))  # train-mode forward moves the BN running statistics
        ref.update(model)
        ours = ema_update(ours, {k: jnp.asarray(model.state_dict()[k].numpy()) for k in names}, updates)
    for k in names:
        np.testing.assert_allclose(ours[k], ref.ema.state_dict()[k].numpy(), rtol=1e-6, atol=1e-7, err_msg=k)

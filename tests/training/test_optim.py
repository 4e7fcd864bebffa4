import pytest
import torch

from bertfit.model import TextClassifier, load_encoder
from bertfit.training.optim import build_scheduler, linear_warmup_decay, parameter_groups


def test_schedule_warms_up_then_decays_to_zero():
    factors = [linear_warmup_decay(step, warmup_steps=4, total_steps=20) for step in range(21)]
    assert factors[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factors[4] == 1.0 and factors[20] == 0.0
    assert all(a > b for a, b in zip(factors[4:], factors[5:]))


def test_scheduler_drives_the_optimizer():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = build_scheduler(optimizer, warmup_ratio=0.1, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.5) and rates[1] == 1.0 and rates[-1] == pytest.approx(1 / 9)


def test_no_weight_decay_on_bias_and_layernorm(tiny_model_dir):
    model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=3)
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert all(p.ndim == 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))

import pytest
import torch

from bertfit.model import TextClassifier, load_encoder
from bertfit.training.optim import build_optimizer, build_scheduler, linear_warmup_decay, parameter_groups, torch_version


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


def test_the_cpu_optimizer_is_fused_and_steps_as_the_per_tensor_loop_does(tiny_model_dir):
    """The fused AdamW kernel (5x faster a step on CPU, docs/decisions.md) changes the speed, not the arithmetic."""
    torch.manual_seed(0)
    fused_model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=3)
    looped_model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=3)
    looped_model.load_state_dict(fused_model.state_dict())
    fused = build_optimizer(fused_model, 1e-3, 0.01, torch.device("cpu"))
    looped = torch.optim.AdamW(parameter_groups(looped_model, 0.01), lr=1e-3, foreach=False)
    # torch before 2.4 has no CPU fused kernel: there the optimizer is the per-tensor loop (make test-compat runs it)
    assert bool(fused.defaults["fused"]) == (torch_version() >= (2, 4)) and not looped.defaults["fused"]
    ids = torch.randint(5, 100, (4, 12))
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (looped_model, looped)):
            torch.manual_seed(1)  # the same dropout masks in both
            model(ids, torch.ones_like(ids)).logsumexp(-1).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    before = load_encoder(str(tiny_model_dir)).state_dict()
    for (name, a), b in zip(fused_model.named_parameters(), looped_model.parameters()):
        if name.endswith("key.bias"):  # its gradient is rounding noise (softmax ignores a shift shared by all keys),
            continue  # which Adam scales to a full step either way
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(fused_model.encoder.embeddings.word_embeddings.weight, before["embeddings.word_embeddings.weight"])

"""The fused backends' packed operands: built once per model, rebuilt whenever a parameter changes."""

import torch

from microast_fast import MicroAST
from microast_fast.operand_cache import OperandCache


def counting_cache():
    calls = []
    return OperandCache(lambda model: calls.append(model) or len(calls))


def test_packs_once_until_a_parameter_changes():
    model = MicroAST.from_pretrained(backend="torch")
    cache = counting_cache()
    assert cache.get(model) == 1 and cache.get(model) == 1
    with torch.no_grad():
        model.decoder.dec1.conv1.conv_layer.weight.mul_(1.0)  # in place: the version counter moves
    assert cache.get(model) == 2 and cache.get(model) == 2
    model.to(torch.float64)  # cast: new storage
    assert cache.get(model) == 3


def test_each_model_has_its_own_packing():
    first, second = MicroAST.from_pretrained(backend="torch"), MicroAST.from_pretrained(backend="torch")
    cache = counting_cache()
    assert (cache.get(first), cache.get(second), cache.get(first)) == (1, 2, 1)


def test_models_made_under_inference_mode_pack_per_call():
    with torch.inference_mode():
        model = MicroAST.from_pretrained(backend="torch")
    cache = counting_cache()
    assert (cache.get(model), cache.get(model)) == (1, 2)  # no version counter to key on

"""Published weights: bundled, loaded from the four-file release, round-tripped, and bad files refused."""

import shutil

import pytest
import torch

from microast_fast import CheckpointError, MicroAST, MicroASTReference, load_official
from microast_fast.checkpoint import MODULE_NAMES, bundled_weights_dir


def test_bundled_weights_with_licence():
    folder = bundled_weights_dir()
    assert (folder / "LICENSE").read_text().startswith("MIT")
    for name in MODULE_NAMES:
        assert (folder / f"{name}_iter_160000.pth.tar").is_file()


def test_from_pretrained_loads_published_tensors_unchanged():
    model = MicroAST.from_pretrained(backend="torch")
    for name in MODULE_NAMES:
        published = torch.load(bundled_weights_dir() / f"{name}_iter_160000.pth.tar", weights_only=True)
        mine = getattr(model, name).state_dict()
        assert mine.keys() == published.keys()
        for key, value in published.items():
            assert torch.equal(mine[key], value), key
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_state_dict_round_trips_both_ways():
    ref = MicroASTReference.from_pretrained()
    fast = MicroAST(backend="torch")
    fast.load_state_dict(ref.state_dict())
    back = MicroASTReference()
    back.load_state_dict(fast.state_dict())
    assert fast.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_from_reference_keeps_dtype_and_weights():
    ref = MicroASTReference.from_pretrained().double()
    fast = MicroAST.from_reference(ref, backend="torch")
    assert fast.decoder.dec1.conv1.conv_layer.weight.dtype == torch.float64
    assert torch.equal(fast.decoder.dec3[10].conv_layer.weight, ref.decoder.dec3[10].conv_layer.weight)


@pytest.fixture
def release(tmp_path):
    """A copy of the published release layout in a temporary folder."""
    shutil.copytree(bundled_weights_dir(), tmp_path / "models")
    return tmp_path / "models"


def test_load_official(release):
    model = load_official(release, backend="torch")
    reference = MicroAST.from_pretrained(backend="torch")
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_load_official_names_missing_files(release):
    (release / "modulator_iter_160000.pth.tar").unlink()
    with pytest.raises(CheckpointError, match="modulator_iter_160000.pth.tar"):
        load_official(release)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official(release / "nowhere")


def test_truncated_checkpoint(release):
    path = release / "decoder_iter_160000.pth.tar"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_official(release)


def test_checkpoint_of_the_wrong_module(release):
    # The decoder file where the content encoder's belongs: every mismatch is named.
    shutil.copy(release / "decoder_iter_160000.pth.tar", release / "content_encoder_iter_160000.pth.tar")
    with pytest.raises(CheckpointError, match=r"missing keys \['enc1.0.conv_layer.bias'.*unexpected keys \['dec1"):
        load_official(release)


def test_load_state_dict_reports_missing_unexpected_and_shapes():
    state = MicroASTReference().state_dict()
    del state["decoder.dec3.10.conv_layer.bias"]
    state["decoder.extra"] = torch.zeros(1)
    state["modulator.weight1.0.conv_layer.weight"] = torch.zeros(64, 2, 3, 3)
    for model in (MicroAST(), MicroASTReference()):
        with pytest.raises(CheckpointError) as err:
            model.load_state_dict(state)
        message = str(err.value)
        assert "decoder.dec3.10.conv_layer.bias" in message and "decoder.extra" in message
        assert "modulator.weight1.0.conv_layer.weight: checkpoint (64, 2, 3, 3), model (64, 1, 3, 3)" in message
        assert isinstance(err.value, RuntimeError)  # what nn.Module.load_state_dict callers catch


def test_not_a_state_dict(tmp_path):
    from microast_fast.checkpoint import read_state_dict

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_state_dict(tmp_path / "list.pt")

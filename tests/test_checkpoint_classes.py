import pytest
import torch

from wsss.errors import ConfigError
from wsss.models import CAMClassifier, load_model, save_model


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = CAMClassifier("resnet10t", num_classes=2, output_stride=16)
    return save_model(tmp_path / "last", model, {"classes": ["cat", "dog"]}), model


def test_matching_classes_load_the_same_weights(checkpoint):
    path, model = checkpoint
    loaded, meta = load_model(path, classes=["cat", "dog"])
    assert meta["classes"] == ["cat", "dog"]
    assert torch.equal(loaded.head.weight, model.head.weight)


@pytest.mark.parametrize("classes", [["dog", "cat"], ["cat"], ["cat", "dog", "bird"]])
def test_other_classes_are_refused_naming_the_checkpoint(checkpoint, classes):
    path, _ = checkpoint
    with pytest.raises(ConfigError, match=r"last\.safetensors was trained on classes"):
        load_model(path, classes=classes)

"""Multi-stage pooled image features: which blocks are pooled, old models, options and cache keys."""

from __future__ import annotations

import json

import pytest
import torch

from rakuten_classifier.modeling.errors import ImageModelError
from rakuten_classifier.modeling.image.backbones import BACKBONES
from rakuten_classifier.modeling.image.classifier import ImageClassifier
from rakuten_classifier.modeling.image.model_config import CONFIG_FILE, ImageModelConfig
from rakuten_classifier.modeling.image.networks import build_blocks, pooled_features
from rakuten_classifier.modeling.image.options import ImageTrainingOptions

WITH_STAGES = [name for name, spec in BACKBONES.items() if spec.stages]


def test_the_backbones_served_offline_all_have_stages():
    assert set(WITH_STAGES) == {"mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


@pytest.mark.parametrize("backbone", WITH_STAGES)
def test_each_pooled_stage_is_the_first_block_of_a_stage_with_the_declared_width(backbone):
    blocks = build_blocks(backbone, pretrained=False).eval()
    widths, x = [], torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for block in blocks:
            x = block(x)
            widths.append(x.shape[1])
    spec = BACKBONES[backbone]
    for index, channels in spec.stages:
        assert widths[index] == channels
        assert widths[index - 1] != channels  # the block where the stage's width starts
    assert [index for index, _ in spec.stages] == sorted(index for index, _ in spec.stages)
    assert max(index for index, _ in spec.stages) < len(blocks) - 1  # the last block is always pooled


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite1"])
def test_multi_stage_features_are_the_stages_pools_then_the_last_blocks_pool(backbone):
    torch.manual_seed(0)
    spec = BACKBONES[backbone]
    model = ImageClassifier(ImageModelConfig(backbone=backbone, pooled_blocks=spec.stage_blocks)).eval()
    single = ImageClassifier(ImageModelConfig(backbone=backbone), model.blocks).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features, last = model.features(x), single.features(x)
        stage_pools = []
        y = x
        for index, block in enumerate(model.blocks):
            y = block(y)
            if index in model.taps:
                stage_pools.append(y.mean(dim=(2, 3)))
    assert features.shape == (2, spec.pooled_dim(spec.stage_blocks))
    assert model.head.in_features == spec.pooled_dim(spec.stage_blocks)
    assert last.shape == (2, spec.feature_dim)
    assert single.head.in_features == spec.feature_dim
    torch.testing.assert_close(features[:, -spec.feature_dim :], last)
    torch.testing.assert_close(features[:, : -spec.feature_dim], torch.cat(stage_pools, dim=1))
    torch.testing.assert_close(pooled_features(model.blocks, x), last)


def test_a_last_block_model_is_saved_as_before_and_a_multi_stage_one_with_its_blocks(tmp_path):
    torch.manual_seed(1)
    old = ImageClassifier(ImageModelConfig(backbone="mobilenet_v2")).eval()
    old.save(tmp_path / "m")
    # No new key: a last-block model stays readable by code from before multi-stage features.
    assert "pooled_blocks" not in json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    loaded = ImageClassifier.load(tmp_path / "m", device="cpu")
    assert loaded.config.pooled_blocks == []
    assert loaded.head.in_features == 1280
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))
    multi = ImageClassifier(ImageModelConfig(backbone="mobilenet_v2", pooled_blocks=[11, 14, 17])).eval()
    multi.save(tmp_path / "n")
    assert json.loads((tmp_path / "n" / CONFIG_FILE).read_text())["pooled_blocks"] == [11, 14, 17]
    with torch.no_grad():
        torch.testing.assert_close(ImageClassifier.load(tmp_path / "n", device="cpu")(x), multi(x))


def test_a_saved_model_naming_blocks_the_spec_does_not_declare_is_refused_clearly(tmp_path):
    ImageClassifier(ImageModelConfig(backbone="mobilenet_v2", pooled_blocks=[11, 14, 17])).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    config["pooled_blocks"] = [10, 14, 17]  # what another version of the stages would have saved
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ImageModelError, match=r"blocks \[10\] are not among its declared stages"):
        ImageClassifier.load(tmp_path / "m", device="cpu")


def test_multi_stage_defaults_and_refusals():
    assert ImageTrainingOptions(seed=0, backbone="efficientnet_lite1").resolved_multi_stage is True
    assert ImageTrainingOptions(seed=0, backbone="efficientnet_lite1", multi_stage=False).resolved_multi_stage is False
    assert ImageTrainingOptions(seed=0, backbone="efficientnet_lite1", mode="finetune").resolved_multi_stage is False
    assert ImageTrainingOptions(seed=0, backbone="resnet18").resolved_multi_stage is False  # no stages declared
    with pytest.raises(ImageModelError, match="frozen"):
        ImageTrainingOptions(seed=0, backbone="efficientnet_lite1", mode="finetune", multi_stage=True)
    with pytest.raises(ImageModelError, match="no multi-stage features"):
        ImageTrainingOptions(seed=0, backbone="resnet18", multi_stage=True)
    with pytest.raises(ImageModelError, match="not among its declared stages"):
        ImageClassifier(ImageModelConfig(backbone="resnet18", pooled_blocks=[3]))
    with pytest.raises(ImageModelError, match="frozen"):
        ImageClassifier(ImageModelConfig(backbone="mobilenet_v2", mode="finetune", pooled_blocks=[11, 14, 17]))


def test_multi_stage_and_last_block_features_never_share_a_cache_entry():
    from torch import nn

    from rakuten_classifier.modeling.image.features import network_tag
    from rakuten_classifier.modeling.image.networks import GlobalAvgPool

    multi = ImageClassifier(ImageModelConfig(backbone="mobilenet_v2", pooled_blocks=[11, 14, 17]))
    single = ImageClassifier(ImageModelConfig(backbone="mobilenet_v2"), multi.blocks)
    assert multi.feature_tag() != single.feature_tag()
    assert multi.feature_tag().split("-")[-1] == single.feature_tag().split("-")[-1]  # same weights hashed
    assert multi.feature_tag().startswith("mobilenet_v2+b11.14.17-")
    # A last-block model keeps the key its cached features had before multi-stage features existed.
    assert single.feature_tag() == network_tag("mobilenet_v2", nn.Sequential(multi.blocks, GlobalAvgPool()))

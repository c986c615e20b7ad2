"""The frozen-tower cache: the same features as the tower, the tower run once per image, the same
training curve as without the cache, the towers put back, trainable towers refused."""

import pytest
import torch

from vlmkit.train.feature_cache import CachedTower, cache_frozen_towers, pixel_key
from vlmkit.train.trainer import TrainConfig, Trainer

from .conftest import dataset, tiny_model


class _Counting(torch.nn.Module):
    """Wraps a tower and counts the images it is run on."""

    def __init__(self, tower):
        super().__init__()
        self.inner, self.frozen, self.seen = tower, True, 0

    def forward(self, pixels):
        self.seen += pixels.shape[0]
        return self.inner(pixels)


def _pixels(model, n, seed=0):
    size = model.lr_encoder.info.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_features_equal_the_tower_and_each_image_runs_once():
    model = tiny_model()
    tower = _Counting(model.lr_encoder)
    cached = CachedTower(tower)
    pixels = _pixels(model, 3)
    batch = torch.cat([pixels, pixels[:1]])  # the first image twice in one batch
    first = cached(batch)
    assert torch.equal(first, model.lr_encoder(batch))
    assert tower.seen == 3 and (cached.misses, cached.hits) == (3, 1)
    again = cached(pixels[[2, 0]])
    assert torch.equal(again, first[[2, 0]])
    assert tower.seen == 3 and cached.hits == 3


def test_key_tells_images_apart_by_content_not_identity():
    pixels = torch.zeros(2, 3, 4, 4)
    assert pixel_key(pixels[0]) == pixel_key(pixels[1].clone())
    changed = pixels[1].clone()
    changed[0, 0, 0] = 1e-7
    assert pixel_key(pixels[0]) != pixel_key(changed)
    assert pixel_key(pixels[0]) != pixel_key(pixels[0].double())


def test_trainable_tower_is_refused():
    model = tiny_model()
    model.lr_encoder.frozen = False
    with pytest.raises(ValueError, match="only a frozen tower can be cached"):
        CachedTower(model.lr_encoder)
    with cache_frozen_towers(model) as cached:
        assert "lr_encoder" not in cached and model.lr_encoder.__class__ is not CachedTower


def test_training_with_the_cache_matches_training_without(tiny_data):
    config = TrainConfig(stage="finetune", max_steps=8, per_device_batch_size=2, seed=0,
                         progress=False, warmup_ratio=0.0)
    plain = tiny_model()
    expected = Trainer(plain, dataset(plain, tiny_data), config).train()
    model = tiny_model()
    towers = (model.lr_encoder, model.hr_encoder)
    with cache_frozen_towers(model) as cached:
        assert set(cached) == {"lr_encoder", "hr_encoder"}
        history = Trainer(model, dataset(model, tiny_data), config).train()
        assert cached["hr_encoder"].hits > 0  # 2 epochs: each image seen again
    assert (model.lr_encoder, model.hr_encoder) == towers  # put back
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in expected], abs=1e-6)
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_towers_are_restored_after_an_error():
    model = tiny_model()
    tower = model.hr_encoder
    with pytest.raises(RuntimeError, match="boom"), cache_frozen_towers(model):
        raise RuntimeError("boom")
    assert model.hr_encoder is tower

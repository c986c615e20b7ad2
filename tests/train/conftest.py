"""Shared pieces for the training tests: a tiny MGM model and a tiny LLaVA dataset on disk."""

import pytest
import torch

import vlmkit
from vlmkit.data.llava import LlavaDataset, write_synthetic


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return vlmkit.build("mgm-tiny")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """``train.json`` with 8 samples (6 with an image, 2 text-only) and its images."""
    return write_synthetic(tmp_path_factory.mktemp("tiny-data"), n=8)


def dataset(model, path, **kwargs):
    return LlavaDataset(path, None, model, **kwargs)

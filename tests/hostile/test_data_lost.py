"""No data lost: a save killed at any point (while writing, with the old copy moved aside, just
before the new one moves in, at a random moment) leaves a complete model that the next load or save
restores; concurrent writers never fail; leftovers of killed runs are removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vlmkit
from vlmkit._replace import _writer, recover_directory
from vlmkit.train.trainer import TrainConfig, Trainer
from tests.train.conftest import dataset, tiny_data, tiny_model  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]

# argv: target, point, seed, rounds. Kills itself with SIGKILL at ``point`` of the last save.
CHILD = """
import os, signal, sys
from pathlib import Path
import torch
import vlmkit
import vlmkit._checkpoint as checkpoint

target, point, seed, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(seed)
model = vlmkit.build("mgm-tiny")
real_rename, real_save = os.rename, checkpoint.save_file

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def rename(source, destination):
    if point == "before-swap" and Path(source).name.startswith(f".{target.name}.tmp-"):
        die()
    real_rename(source, destination)
    if point == "aside" and Path(destination).name.startswith(f".{target.name}.old-"):
        die()

def save_file(*args, **kwargs):
    real_save(*args, **kwargs)
    if point == "write":
        die()

for round in range(rounds):
    if round == rounds - 1:
        os.rename, checkpoint.save_file = rename, save_file
    model.save_pretrained(target, max_shard_size="200KB")
print("saved", flush=True)
"""


def _child(target: Path, point: str, seed: int, rounds: int = 1, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(target), point, str(seed), str(rounds)],
                            env=env, **popen)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return vlmkit.build("mgm-tiny").state_dict()


def _same(model, weights) -> bool:
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def old_weights():
    return _weights(1)


@pytest.mark.parametrize("point", ["write", "aside", "before-swap"])
def test_a_save_killed_at_each_point_keeps_the_old_model(tmp_path, old_weights, point):
    target = tmp_path / "model"
    assert _child(target, "none", 1).wait(timeout=300) == 0
    child = _child(target, point, 2)
    assert child.wait(timeout=300) == -signal.SIGKILL
    if point == "aside":
        assert not target.exists()  # the moment the old copy lives only under .model.old-*
    loaded = vlmkit.VisionLanguageModel.from_pretrained(target)
    assert _same(loaded, old_weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # leftovers removed


def test_a_save_killed_at_a_random_moment_leaves_a_whole_model(tmp_path, old_weights):
    target = tmp_path / "model"
    assert _child(target, "none", 1).wait(timeout=300) == 0
    new_weights = _weights(2)
    for delay in (0.0, 0.05, 0.1, 0.2, 0.4):
        child = _child(target, "none", 2, rounds=50, stdout=subprocess.PIPE)
        time.sleep(3.0 + delay)  # past the imports and the build, into the saves
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        loaded = vlmkit.VisionLanguageModel.from_pretrained(target)
        assert _same(loaded, old_weights) or _same(loaded, new_weights)


def test_concurrent_writers_never_fail_and_readers_see_a_whole_model(tmp_path):
    target = tmp_path / "model"
    writers = [_child(target, "none", seed, rounds=12, stderr=subprocess.PIPE, text=True)
               for seed in (3, 4)]
    for writer in writers:
        _, err = writer.communicate(timeout=600)
        assert writer.returncode == 0, err
    loaded = vlmkit.VisionLanguageModel.from_pretrained(target)
    assert _same(loaded, _weights(3)) or _same(loaded, _weights(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recovery_keeps_the_folders_of_live_writers(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    host = _writer().partition("@")[2]
    live = tmp_path / f".model.tmp-{os.getpid()}@{host}-abc"
    elsewhere = tmp_path / f".model.tmp-{_dead_pid()}@another{host}-abc"  # another machine's
    dead = tmp_path / f".model.tmp-{_dead_pid()}@{host}-abc"
    old_dead = tmp_path / f".model.old-{_dead_pid()}@{host}-abc"
    legacy = tmp_path / ".model.old"
    for folder in (live, elsewhere, dead, old_dead, legacy):
        folder.mkdir()
    recover_directory(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name, elsewhere.name])


def test_leftovers_of_a_killed_training_run_are_removed(tiny_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / ".tmp-checkpoint-7", out / ".deleting-checkpoint-3",
                 out / f".final.tmp-{_dead_pid()}@{_writer().partition('@')[2]}-x"]
    for folder in leftovers:
        folder.mkdir()
    (leftovers[0] / "optimizer.pt").write_text("partial")
    model = tiny_model()
    cfg = TrainConfig.from_preset(
        model.config, "finetune", progress=False, max_steps=1, per_device_batch_size=4,
        output_dir=str(out), save_steps=1)
    Trainer(model, dataset(model, tiny_data), cfg).train()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-1", "final", "metrics.jsonl"]

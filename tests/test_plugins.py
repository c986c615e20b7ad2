"""Plugins through real entry points: a good one, one that raises on import, one with a duplicate.

Each scenario runs in a fresh interpreter with the test distributions on ``PYTHONPATH``, exactly as
an installed plugin would be found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import vlmkit
from vlmkit import plugins
from vlmkit.data.conversation import CHAT_TEMPLATES, get_template
from tests._plugins.distributions import write_all

PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import vlmkit
    from vlmkit.components import get
    names = vlmkit.available()
    failures = [(f.entry_point, f.distribution, type(f.error).__name__) for f in vlmkit.plugin_failures()]
origin = None
if "good-double-linear" in names["projector"]:
    origin = str(get("projector", "good-double-linear").origin)
print(json.dumps({
    "names": names,
    "failures": failures,
    "warnings": [str(w.message) for w in caught if w.category.__name__ == "PluginWarning"],
    "origin": origin,
    "identity_origin": str(get("miner", "identity").origin),
}))
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    write_all(root)
    return root


def _env(plugin_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), repo, env.get("PYTHONPATH", "")])
    env.pop("VLMKIT_STRICT_PLUGINS", None)
    env.pop("VLMKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(extra)
    return env


def _probe(plugin_path: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=_env(plugin_path, **extra), capture_output=True, text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def default_run(plugin_path):
    proc = _probe(plugin_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_good_plugin_registers_with_its_distribution(default_run):
    assert "good-double-linear" in default_run["names"]["projector"]
    assert default_run["origin"] == "plugin vlmkit-test-good 1.2.3"


def test_broken_plugin_is_reported_and_isolated(default_run):
    failures = {f[0]: f for f in default_run["failures"]}
    assert failures["vlmkit_test_broken"] == [
        "vlmkit_test_broken", "vlmkit-test-broken 0.0.1", "RuntimeError"
    ]
    broken_warnings = [w for w in default_run["warnings"] if "vlmkit_test_broken" in w]
    assert len(broken_warnings) == 1
    assert "vlmkit-test-broken 0.0.1" in broken_warnings[0]
    assert "broken on purpose" in broken_warnings[0]
    # every built-in still there
    assert "identity" in default_run["names"]["miner"]
    assert "mlp2x_gelu" in default_run["names"]["projector"]


def test_duplicate_name_fails_the_plugin_and_rolls_it_back(default_run):
    failures = {f[0]: f for f in default_run["failures"]}
    assert failures["vlmkit_test_dup"][2] == "DuplicateComponentError"
    assert "dup-plugin-fresh-name" not in default_run["names"]["miner"]
    assert default_run["identity_origin"] == "builtin"


def test_disable_autoload_skips_entry_points(plugin_path):
    proc = _probe(plugin_path, VLMKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "good-double-linear" not in out["names"]["projector"]
    assert out["failures"] == []
    assert "identity" in out["names"]["miner"]


def test_strict_mode_raises_naming_the_distribution(plugin_path):
    proc = _probe(plugin_path, VLMKIT_STRICT_PLUGINS="1")
    assert proc.returncode != 0
    assert "PluginError" in proc.stderr
    assert "vlmkit-test-broken 0.0.1" in proc.stderr


def test_cli_lists_plugin_components_and_failures(plugin_path):
    env = _env(plugin_path)
    listing = subprocess.run(
        [sys.executable, "-m", "vlmkit", "list", "--kind", "projector"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert listing.returncode == 0, listing.stderr
    line = next(l for l in listing.stdout.splitlines() if "good-double-linear" in l)
    assert "plugin vlmkit-test-good 1.2.3" in line
    report = subprocess.run(
        [sys.executable, "-m", "vlmkit", "plugins"], env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    loaded, failed = report.stdout.split("failed (")
    assert "vlmkit-test-good 1.2.3" in loaded and "projector:good-double-linear" in loaded
    assert "vlmkit_test_broken (vlmkit-test-broken 0.0.1): RuntimeError" in failed
    assert "vlmkit_test_dup (vlmkit-test-dup 0.1): DuplicateComponentError" in failed


def _vlmkit(plugin_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmkit", *args], env=_env(plugin_path),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_plugins_add_commands_through_the_hook(plugin_path):
    hello = _vlmkit(plugin_path, "hello-plugin", "Ada")
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout == "hello Ada from vlmkit-test-good\n"
    report = _vlmkit(plugin_path, "plugins")
    loaded = report.stdout.split("failed (")[0]
    assert "projector:good-double-linear, command:hello-plugin" in loaded


def test_a_plugin_that_replaces_a_command_is_rolled_back(plugin_path):
    listing = _vlmkit(plugin_path, "list", "--kind", "miner")
    assert listing.returncode == 0, listing.stderr
    assert "hijacked" not in listing.stdout and "identity" in listing.stdout
    assert "vlmkit-test-clash 0.2 failed to add commands" in listing.stderr
    assert "replaces existing command(s) ['list']" in listing.stderr
    fresh = _vlmkit(plugin_path, "clash-fresh-command")
    assert fresh.returncode == 2 and "No such command 'clash-fresh-command'" in fresh.stderr
    failed = _vlmkit(plugin_path, "plugins").stdout.split("failed (")[1]
    assert "vlmkit_test_clash (vlmkit-test-clash 0.2): PluginError" in failed


def test_in_process_reload_picks_up_a_new_distribution(tmp_path, monkeypatch):
    write_all(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("VLMKIT_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("VLMKIT_STRICT_PLUGINS", raising=False)
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            plugins.reload_plugins()
        assert "good-double-linear" in vlmkit.available("projector")
        model = vlmkit.create("projector", "good-double-linear", in_dim=3, out_dim=5)
        assert model.a.in_features == 3
        assert {f.entry_point for f in vlmkit.plugin_failures()} >= {"vlmkit_test_broken"}
        # a plugin's preset and chat template: plan() finds both
        assert "good-preset" in vlmkit.presets() and "dup-plugin-preset" not in vlmkit.presets()
        checked = vlmkit.plan("good-preset")
        assert checked.config.name == "good-preset"
        assert get_template(checked.config.chat_template).render(
            [{"role": "user", "content": "hi"}]) == "Q: hi\nA:"
    finally:
        monkeypatch.undo()
        plugins.reload_plugins()
    assert "good-double-linear" not in vlmkit.available("projector")
    assert "good-preset" not in vlmkit.presets() and "good-template" not in CHAT_TEMPLATES

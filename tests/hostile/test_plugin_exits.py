"""A plugin cannot end the host: ``sys.exit()`` or its own ``KeyboardInterrupt`` while it loads
or registers is a recorded failure; a real Ctrl-C still stops; ``vlmkit plugins`` reports under
``VLMKIT_STRICT_PLUGINS=1`` instead of a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._plugins.distributions import GOOD, write_distribution

REPO = Path(__file__).resolve().parents[2]
EXIT_ON_IMPORT = "import sys\nsys.exit(3)\n"
INTERRUPT_ON_IMPORT = "raise KeyboardInterrupt\n"
EXIT_IN_HOOK = '''
import sys
import vlmkit

@vlmkit.hookimpl
def vlmkit_register(register):
    register("miner", "exit-plugin-miner", object)
    sys.exit("bye")
'''
WAIT_ON_IMPORT = '''
import os, time
from pathlib import Path
Path(os.environ["VLMKIT_TEST_READY"]).write_text("ready")
time.sleep(60)
'''
PROBE = """
import json, warnings
warnings.simplefilter("ignore")
import vlmkit
failures = {f.entry_point: type(f.error).__name__ for f in vlmkit.plugin_failures()}
print(json.dumps({"failures": failures, "miners": vlmkit.available("miner"),
                  "projectors": vlmkit.available("projector")}))
"""


def _site(root: Path, *plugins: tuple[str, str]) -> Path:
    write_distribution(root, "vlmkit-test-good", "1.2.3", "vlmkit_test_good", GOOD)
    for module, source in plugins:
        write_distribution(root, module.replace("_", "-"), "0.1", module, source)
    return root


def _env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VLMKIT_STRICT_PLUGINS", "VLMKIT_DISABLE_PLUGIN_AUTOLOAD")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


@pytest.fixture(scope="module")
def exiting_site(tmp_path_factory) -> Path:
    return _site(tmp_path_factory.mktemp("site"), ("vlmkit_test_exit", EXIT_ON_IMPORT),
                 ("vlmkit_test_interrupt", INTERRUPT_ON_IMPORT), ("vlmkit_test_hookexit", EXIT_IN_HOOK))


def test_exit_and_interrupt_from_plugins_are_failures_not_the_end(exiting_site):
    proc = subprocess.run([sys.executable, "-c", PROBE], env=_env(exiting_site),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["failures"] == {"vlmkit_test_exit": "SystemExit",
                               "vlmkit_test_hookexit": "SystemExit",
                               "vlmkit_test_interrupt": "KeyboardInterrupt"}
    assert "exit-plugin-miner" not in out["miners"]  # rolled back
    assert "good-double-linear" in out["projectors"]


def test_strict_plugins_command_reports_instead_of_a_traceback(exiting_site):
    proc = subprocess.run([sys.executable, "-m", "vlmkit", "plugins"],
                          env=_env(exiting_site, VLMKIT_STRICT_PLUGINS="1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "vlmkit_test_exit (vlmkit-test-exit 0.1): SystemExit: 3" in proc.stdout
    assert "vlmkit_test_interrupt (vlmkit-test-interrupt 0.1): KeyboardInterrupt" in proc.stdout
    assert "projector:good-double-linear" in proc.stdout


def test_strict_mode_elsewhere_is_one_line(exiting_site):
    proc = subprocess.run([sys.executable, "-m", "vlmkit", "list"],
                          env=_env(exiting_site, VLMKIT_STRICT_PLUGINS="1"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: vlmkit plugin 'vlmkit_test_exit'")


def test_a_real_ctrl_c_while_plugins_load_still_stops(tmp_path):
    (tmp_path / "site").mkdir()
    site = _site(tmp_path / "site", ("vlmkit_test_wait", WAIT_ON_IMPORT))
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", PROBE],
                             env=_env(site, VLMKIT_TEST_READY=str(ready)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr and stdout == ""

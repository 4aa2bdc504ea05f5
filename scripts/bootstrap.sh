#!/usr/bin/env bash
# Set up everything both README commands need, on a fresh machine or an existing one:
#   1. Python 3.12 (lerobot 0.6.1 needs it), found on PATH, through pyenv, or given as PYTHON=;
#   2. uv, at the version pyproject.toml requires, from PyPI into .tools/uv (or UV= one of yours);
#   3. .venv with exactly the versions in uv.lock (`uv sync --frozen`; a no-op when nothing changed);
#   4. a check that the environment really imports and that the GL libraries LIBERO renders with
#      are there (installed with apt-get when run as root, else a one-line error naming them);
#   5. with --browser (as `make test` runs it): Debian's chromium, for the HTML report's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${RECAP_VENV:-.venv}
UV_VERSION=$(sed -n 's/^required-version = "==\([0-9.]*\)".*/\1/p' pyproject.toml)

find_python() {
  local cand
  for cand in "${PYTHON:-}" python3.12 "$(command -v pyenv >/dev/null && pyenv root)"/versions/3.12*/bin/python3.12 \
              /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$cand" ] || continue
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  echo "bootstrap: no working python3.12 found; install Python 3.12 or set PYTHON=/path/to/python3.12" >&2
  return 1
}

find_uv() {
  local cand
  for cand in "${UV:-}" .tools/uv/bin/uv; do
    if [ -n "$cand" ] && [ "$("$cand" --version 2>/dev/null | cut -d' ' -f2)" = "$UV_VERSION" ]; then
      echo "$cand"; return 0
    fi
  done
  echo "bootstrap: installing uv $UV_VERSION from PyPI into .tools/uv" >&2
  rm -rf .tools/uv
  "$1" -m pip install --quiet --disable-pip-version-check --target .tools/uv "uv==$UV_VERSION" >&2
  echo .tools/uv/bin/uv
}

py=$(find_python)
uv=$(find_uv "$py")
# --frozen: install uv.lock as it is, never re-resolve; `make test` checks the lock matches pyproject.toml.
# --compile-bytecode: every module compiled once here (2 min, then seconds), not at each import in each
# process where PYTHONDONTWRITEBYTECODE is set, as it is on our CI machines (4.7 s of each relabel command).
UV_PROJECT_ENVIRONMENT="$VENV" "$uv" sync --frozen --extra dev --python "$py" --quiet --compile-bytecode
# (-W: robosuite, imported by the check, has an invalid escape that Python warns of when it first compiles it)
"$VENV/bin/python" -W ignore::SyntaxWarning scripts/check_env.py || {
  missing=$("$VENV/bin/python" scripts/check_env.py --missing-gl-packages)
  if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing the GL libraries LIBERO renders with: $missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    "$VENV/bin/python" -W ignore::SyntaxWarning scripts/check_env.py
  else
    exit 1
  fi
}
# 5. With --browser (`make test`): Debian's chromium, which the HTML report's browser test drives
#    (tests/test_html_report.py), installed with apt-get when run as root and missing; where it
#    cannot be, that test is skipped and says why.
if [ "${1:-}" = "--browser" ] && [ -z "${RECAP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null \
   && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian's chromium for the HTML report's browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      || echo "bootstrap: could not install chromium; the HTML report's browser test will be skipped" >&2
  else
    echo "bootstrap: no chromium (install it as root, or set RECAP_CHROMIUM=/path/to/chromium);" \
         "the HTML report's browser test will be skipped" >&2
  fi
fi

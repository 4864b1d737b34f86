#!/usr/bin/env bash
# Installs what `make up` and `make test` need and is missing: uv and the locked Python
# dependencies; ffmpeg, nginx, haproxy, prometheus and chromium through apt-get when running as
# root on Debian, otherwise a clear message naming what to install.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "setup: $*" >&2; }

export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  say "installing uv"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
fi

packages=()
for tool in ffmpeg:ffmpeg ffprobe:ffmpeg nginx:nginx-light haproxy:haproxy \
            prometheus:prometheus promtool:prometheus chromium:chromium node:nodejs npm:npm \
            wrk:wrk; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || packages+=("${tool##*:}")
done
if ((${#packages[@]})); then
  mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${packages[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  else
    say "missing system packages: ${packages[*]}"
    say "install them with your package manager (Debian: sudo apt-get install ${packages[*]})"
    exit 1
  fi
fi

# The interpreter: VSP_PYTHON, else the distribution's python3.11 when there is one (Debian and
# Ubuntu build it with profile-guided optimisation and LTO, as the python image the Dockerfile
# ships is built; a plain source build, pyenv's default, spends about a sixth more time in the
# services' hot paths: docs/BENCHMARKS.md), else the python3.11 uv finds.
python=${VSP_PYTHON:-}
if [[ -z $python && -x /usr/bin/python3.11 ]]; then
  python=/usr/bin/python3.11
fi
uv_python=()
if [[ -n $python ]]; then
  uv_python=(--python "$python")
  # A virtual environment made from another interpreter is made again.
  if [[ -f .venv/pyvenv.cfg ]] && ! grep -qx "home = $(dirname "$python")" .venv/pyvenv.cfg; then
    say "the virtual environment is not on $python: making it again"
    rm -f .venv/.synced
  fi
fi
if [[ ! -f .venv/.synced ]] || [[ uv.lock -nt .venv/.synced ]] || [[ pyproject.toml -nt .venv/.synced ]]; then
  say "installing Python dependencies (uv sync${python:+ on $python})"
  uv sync --quiet --frozen --compile-bytecode --extra test --extra load "${uv_python[@]}"
  touch .venv/.synced
fi

# tus-js-client for the browser-compatible tus client tests, from the committed lock file.
if [[ -f tests/node/package-lock.json && ! -d tests/node/node_modules ]] && command -v npm >/dev/null 2>&1; then
  say "installing the Node test clients (npm ci)"
  npm ci --silent --prefix tests/node >/dev/null
fi

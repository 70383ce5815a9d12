#!/usr/bin/env bash
# `make lock`: resolve the CPU and GPU stacks into requirements/lock-{cpu,gpu}.txt with uv, every wheel with its hash.
# scripts/setup.sh installs from these files only, so two fresh installs are the same install. Packages already in a
# lock keep their versions (uv prefers the existing pins); UPGRADE=1 re-resolves to the newest allowed versions.
# Both locks are for Linux x86_64 and Python 3.11, the CI machines' and the GPU machines' platform.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
CERT=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -f "$CERT" ] && export SSL_CERT_FILE="$CERT"
ARGS=(--no-config --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet)
[ "${UPGRADE:-0}" = 1 ] && ARGS+=(--upgrade)
export UV_CUSTOM_COMPILE_COMMAND="make lock"
"$UV" pip compile "${ARGS[@]}" pyproject.toml requirements/cpu.in --extra dev \
    --override requirements/cpu-overrides.txt -o requirements/lock-cpu.txt
"$UV" pip compile "${ARGS[@]}" pyproject.toml requirements/gpu.in --extra dev -o requirements/lock-gpu.txt
echo "[lock] requirements/lock-cpu.txt: $(grep -c '^[A-Za-z0-9]' requirements/lock-cpu.txt) packages," \
    "requirements/lock-gpu.txt: $(grep -c '^[A-Za-z0-9]' requirements/lock-gpu.txt) packages"

# Sourced by scripts/demo and scripts/test: installs what is missing, then activates the venv.
# Safe to run again: every step checks first. Needs root (or sudo) only when apt packages are missing.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo_root/.venv"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    # $@: Debian packages; installs only those not installed yet.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

apt_install mosquitto python3-venv ${PENDANT_EXTRA_APT:-}
# The console's front-end packages come from the npm registry (backend/frontend/package-lock.json).
command -v npm >/dev/null 2>&1 || apt_install nodejs npm

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating the virtual environment in .venv"
    python3 -m venv "$venv"
fi

# Reinstall only when pyproject.toml changed since the last install.
stamp="$venv/.pendant-installed"
want=$(sha256sum "$repo_root/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python packages into .venv (first run takes a minute)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$repo_root[test]"
    echo "$want" > "$stamp"
fi

# The console's JavaScript and map data: exactly the versions in the lock file, served by the backend.
frontend="$repo_root/backend/frontend"
npm_stamp="$frontend/node_modules/.pendant-installed"
npm_want=$(sha256sum "$frontend/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$npm_stamp" ] || [ "$(cat "$npm_stamp")" != "$npm_want" ]; then
    echo "setup: installing the console's front-end packages (npm ci)"
    (cd "$frontend" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$npm_want" > "$npm_stamp"
fi

export PATH="$venv/bin:$PATH"
cd "$repo_root"

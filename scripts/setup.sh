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

export PATH="$venv/bin:$PATH"
cd "$repo_root"

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

# The Python packages: exactly the versions of a lock file (scripts/lock writes them), with their hashes.
# PENDANT_INSTALL says which: "demo" (scripts/demo: the runtime and the virtual pendant's MicroPython) or
# "test" (scripts/test and CI: that and the test tools). Installed again only when the lock file or
# pyproject.toml changed since the last install; a venv set up for the tests has the demo's packages too.
install_set=${PENDANT_INSTALL:-demo}
case "$install_set" in
    demo | test) ;;
    *) echo "setup: PENDANT_INSTALL must be demo or test, not '$install_set'" >&2; exit 2 ;;
esac
installed_stamp() { echo "$venv/.pendant-installed-$1"; }
wanted_stamp() { cat "$repo_root/requirements/$1.txt" "$repo_root/pyproject.toml" | sha256sum | cut -d' ' -f1; }
is_current() { [ -f "$(installed_stamp "$1")" ] && [ "$(cat "$(installed_stamp "$1")")" = "$(wanted_stamp "$1")" ]; }
if ! is_current "$install_set" && ! { [ "$install_set" = demo ] && is_current test; }; then
    echo "setup: installing Python packages into .venv from requirements/$install_set.txt (first run takes a minute)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q --require-hashes -r "$repo_root/requirements/$install_set.txt"
    # The project itself, editable; its dependencies came from the lock file above.
    "$venv/bin/python" -m pip install -q --no-deps -e "$repo_root"
    wanted_stamp "$install_set" > "$(installed_stamp "$install_set")"
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

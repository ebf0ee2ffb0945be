"""The console's front-end files from npm (backend/frontend/package-lock.json, installed by `npm ci`
into Settings.frontend_dir), served by the backend itself under /vendor/: a police network is offline,
so nothing is loaded from a CDN, and nothing of them is copied into the repository.

Only the files in VENDOR_FILES are served, whatever the URL asks for.
"""

from __future__ import annotations

from pathlib import Path

# URL name under /vendor/ -> path inside node_modules
VENDOR_FILES: dict[str, str] = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "images/marker-icon.png": "leaflet/dist/images/marker-icon.png",
    "images/marker-icon-2x.png": "leaflet/dist/images/marker-icon-2x.png",
    "images/marker-shadow.png": "leaflet/dist/images/marker-shadow.png",
    "images/layers.png": "leaflet/dist/images/layers.png",
    "images/layers-2x.png": "leaflet/dist/images/layers-2x.png",
    "topojson-client.min.js": "topojson-client/dist/topojson-client.min.js",
    # Natural Earth country outlines (1:10 million): the offline base map.
    "countries-10m.json": "world-atlas/countries-10m.json",
    "countries-50m.json": "world-atlas/countries-50m.json",
}

MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


class MissingFrontend(RuntimeError):
    """The front-end packages are not installed where the settings say."""


def vendor_path(frontend_dir: Path, name: str) -> Path | None:
    """The file behind /vendor/<name>, or None if `name` is not one we serve."""
    inside = VENDOR_FILES.get(name)
    return Path(frontend_dir) / inside if inside is not None else None


def missing_files(frontend_dir: Path) -> list[str]:
    """The vendor files that are not installed (empty when `npm ci` has run)."""
    return [name for name in VENDOR_FILES if not (Path(frontend_dir) / VENDOR_FILES[name]).is_file()]


def check_installed(frontend_dir: Path) -> None:
    """MissingFrontend with what to run, unless every vendor file is there."""
    missing = missing_files(frontend_dir)
    if missing:
        raise MissingFrontend(
            f"the console's front-end packages are missing from {frontend_dir} ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}): run scripts/setup.sh (it runs `npm ci` in "
            "backend/frontend), or set PENDANT_FRONTEND_DIR to where they are installed"
        )


def media_type(path: Path) -> str:
    """The Content-Type of a vendor or static file."""
    return MEDIA_TYPES.get(path.suffix, "application/octet-stream")

"""`pendant release`: build firmware releases into the backend's release store, list them, show one.

A release is what a pendant will download over the air (issue 14): the firmware compiled with mpy-cross,
as `pendant deploy` compiles it, plus a manifest of every file's SHA-256 and size
(pendant_backend.releases). The store is `releases/` in the backend's data folder (PENDANT_DATA_DIR).
"""

from __future__ import annotations

from pathlib import Path

import click

from pendant_backend.releases import Release, list_releases, load_release, store_dir, write_release
from pendant_tools.backend_cli import CONTEXT, print_json, settings_from_env, table, user_errors
from pendant_tools.errors import ToolError


@click.group(context_settings=CONTEXT)
def release() -> None:
    """Firmware releases for updates over the air.

    \b
    Examples:
      pendant release build --min-from 0.2.0   # compile firmware/ into a new release
      pendant release list                     # what the store holds, newest first
      pendant release show 0.3.0 --json        # one release's manifest, every file checked
    """


def board_names(firmware_dir: Path) -> list[str]:
    """The board modules the firmware carries (firmware/pendant/boards/*.py)."""
    return sorted(p.stem for p in (firmware_dir / "pendant" / "boards").glob("*.py") if p.stem != "__init__")


@release.command(context_settings=CONTEXT)
@click.option(
    "--firmware",
    "firmware_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The firmware folder to build (main.py and pendant/) [default: this checkout's firmware/].",
)
@click.option(
    "--min-from",
    default="0.0.0",
    show_default=True,
    metavar="VERSION",
    help="The oldest running firmware that may update to this release (older pendants are refused it).",
)
@click.option(
    "--board",
    "boards",
    multiple=True,
    metavar="NAME",
    help="A board the release is for (repeat for more) [default: every board module in the firmware].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new release's manifest as JSON.")
@user_errors
def build(firmware_dir: Path | None, min_from: str, boards: tuple[str, ...], as_json: bool) -> None:
    """Compile the firmware into a new release in the store.

    The release's version is the firmware's own (FW in pendant/__init__.py), so a pendant that boots it
    reports the version it was offered. A version is built once: raise FW for the next build.

    \b
    Examples:
      pendant release build                               # firmware/, for every board, from any version
      pendant release build --min-from 0.2.0 --board t_a7670e
      pendant release build --firmware ~/fw-0.3.0 --json
    """
    from pendant_hardware.flash import FirmwareBuildError, default_firmware_dir, mpy_cross_command
    from pendant_tools.deploying import build_manifest, compiler_version, firmware_version

    firmware_dir = firmware_dir or default_firmware_dir()
    known = board_names(firmware_dir)
    unknown = sorted(set(boards) - set(known))
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: no such board in {firmware_dir / 'pendant' / 'boards'} "
            f"(boards: {', '.join(known) or 'none'})",
            param_hint="--board",
        )
    try:
        command = mpy_cross_command()
        mpy = ".".join(str(part) for part in compiler_version(command))
        version = firmware_version(firmware_dir)
        files = build_manifest(firmware_dir, command)
    except (ToolError, FirmwareBuildError) as exc:
        raise click.ClickException(str(exc)) from None
    store = store_dir(settings_from_env().data_dir)
    made = write_release(
        store,
        version=version,
        files=[(item.path, item.data) for item in files],
        min_from=min_from,
        boards=boards or known,
        mpy=mpy,
    )
    if as_json:
        print_json(made.as_json())
        return
    click.echo(
        f"release {made.version}: {len(made.files)} files, {made.total_bytes:,} bytes, for "
        f"{', '.join(made.boards)} (.mpy {made.mpy}), updates from {made.min_from} or later"
    )
    click.echo(f"stored in {made.folder}")


@release.command(name="list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of manifests (without files).")
@user_errors
def list_command(as_json: bool) -> None:
    """The releases in the store, newest first (a folder that is not a readable release is named on
    stderr).

    \b
    Examples:
      pendant release list
      pendant release list --json | jq -r '.[0].version'   # the newest
    """
    store = store_dir(settings_from_env().data_dir)
    releases, broken = list_releases(store)
    for line in broken:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        print_json([{k: v for k, v in r.as_json().items() if k != "files"} for r in releases])
        return
    if not releases:
        click.echo(f"no releases in {store}: build one with `pendant release build`")
        return
    table(["VERSION", "FROM", "BOARDS", "FILES", "BYTES", "MPY", "BUILT"], [_row(r) for r in releases])


def _row(item: Release) -> list[str]:
    return [
        item.version,
        item.min_from,
        ",".join(item.boards),
        str(len(item.files)),
        f"{item.total_bytes:,}",
        item.mpy,
        item.created_at,
    ]


@release.command(context_settings=CONTEXT)
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@user_errors
def show(version: str, as_json: bool) -> None:
    """One release: its manifest and every file, each checked against its SHA-256 (a damaged release
    is an error, exit code 1).

    \b
    Examples:
      pendant release show 0.3.0
      pendant release show 0.3.0 --json
    """
    found = load_release(store_dir(settings_from_env().data_dir), version)
    if as_json:
        print_json(found.as_json())
        return
    click.echo(f"release {found.version}, built {found.created_at}, in {found.folder}")
    click.echo(
        f"  for boards {', '.join(found.boards)}; .mpy {found.mpy}; updates from {found.min_from} or later"
    )
    click.echo(f"  {len(found.files)} files, {found.total_bytes:,} bytes, every file matches its SHA-256")
    table(["PATH", "BYTES", "SHA-256"], [[f.path, f"{f.size:,}", f.sha256] for f in found.files])

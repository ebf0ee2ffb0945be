"""`pendant server install`: write the systemd units of a server (thin over pendant_tools.server_units)."""

from __future__ import annotations

import json
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path

import click

import pendant_tools
from pendant_tools.errors import ToolError, command_errors
from pendant_tools.params import CONTEXT, json_option
from pendant_tools.server_units import (
    TARGET,
    UNIT_NAMES,
    LayoutError,
    ServerLayout,
    check_layout,
    parse_environment_file,
    render_units,
)

SYSTEM_UNITS = Path("/etc/systemd/system")
DEFAULT_ENV_FILE = Path("/etc/pendant/pendant.env")


@dataclass(frozen=True)
class InstallPlan:
    """The units to write and the commands left for the administrator."""

    layout: ServerLayout
    output_dir: Path
    units: dict[str, str]
    next_steps: list[str]


@click.group("server", context_settings=CONTEXT)
def server() -> None:
    """Set up this machine as a server: systemd units for the broker, the backend and the console.

    \b
    Examples:
      sudo /opt/pendant/.venv/bin/pendant server install --dry-run
      sudo /opt/pendant/.venv/bin/pendant server install --data /var/lib/pendant
    """


@server.command("install", context_settings=CONTEXT)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The data folder the services share (default: PENDANT_DATA_DIR of the settings file, else of "
    "this shell, else ./data). Made absolute.",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_ENV_FILE,
    show_default=True,
    help="The settings file (PENDANT_*=value lines, docs/operations.md) the units read with "
    "EnvironmentFile=. It must exist: it is checked now, as the services will read it.",
)
@click.option(
    "--user",
    default="pendant",
    show_default=True,
    metavar="NAME",
    help="The system user (and group) the services run as; it should own the data folder.",
)
@click.option(
    "--output",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=SYSTEM_UNITS,
    show_default=True,
    help="Where to write the unit files.",
)
@click.option(
    "--pendant",
    "pendant_bin",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The `pendant` executable the units start (default: the one beside this Python, "
    f"{Path(sys.executable).parent / 'pendant'}).",
)
@click.option("--dry-run", is_flag=True, help="Print the units and the next steps; write nothing.")
@json_option()
@command_errors
def server_install(
    data_dir: Path | None,
    env_file: Path,
    user: str,
    output_dir: Path,
    pendant_bin: Path | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Write pendant-broker.service, pendant-backend.service, pendant-web.service and pendant.target.

    The three services run `pendant broker run`, `pendant backend run` and `pendant backend web` as
    USER, in the data folder, with the settings file's variables; they restart whenever they stop
    (Restart=always) and run in systemd's sandbox: only the data folder is writable, no capabilities,
    no devices, their own /tmp, /home hidden. So the code, the `pendant` executable and the data
    folder must not be under /home, /root or /tmp.

    Before anything is written, the settings file is read as the services will read it and checked
    (a bad value stops here, with the setting's name). The units are written again on every run; the
    command then prints what is left to do: the user, the data folder's owner, `systemctl
    daemon-reload` and `systemctl enable --now pendant.target`.

    \b
    Examples:
      sudo /opt/pendant/.venv/bin/pendant server install --dry-run    # show them, write nothing
      sudo /opt/pendant/.venv/bin/pendant server install --data /var/lib/pendant
      pendant server install --env-file pendant.env --output units --json   # elsewhere, as JSON
    """
    plan = plan_install(
        data_dir=data_dir,
        env_file=env_file,
        user=user,
        output_dir=output_dir,
        pendant_bin=pendant_bin,
        dry_run=dry_run,
    )
    written = [] if dry_run else write_units(plan)
    if as_json:
        click.echo(json.dumps(_as_json(plan, written, dry_run), indent=2))
        return
    if dry_run:
        for name, text in plan.units.items():
            click.echo(f"# {plan.output_dir / name}")
            click.echo(text)
        click.echo("dry run: nothing written")
    else:
        for path in written:
            click.echo(f"wrote {path}")
    click.echo("next, as root:")
    for step in plan.next_steps:
        click.echo(f"  {step}")


def plan_install(
    *,
    data_dir: Path | None,
    env_file: Path,
    user: str,
    output_dir: Path,
    pendant_bin: Path | None,
    dry_run: bool,
) -> InstallPlan:
    """Check the inputs and render the units; raise click.BadParameter or ToolError with one sentence."""
    env_file = Path(os.path.abspath(env_file))
    output_dir = Path(os.path.abspath(output_dir))
    settings_env = _read_settings_file(env_file)
    data_dir = _choose_data_dir(data_dir, settings_env, env_file)
    pendant_bin = Path(os.path.abspath(pendant_bin or Path(sys.executable).parent / "pendant"))
    if not (pendant_bin.is_file() and os.access(pendant_bin, os.X_OK)):
        raise click.BadParameter(f"{pendant_bin} is not an executable file", param_hint="'--pendant'")
    frontend_dir = _check_settings({**settings_env, "PENDANT_DATA_DIR": str(data_dir)}, env_file, data_dir)
    layout = ServerLayout(
        data_dir=str(data_dir), env_file=str(env_file), user=user, pendant_bin=str(pendant_bin)
    )
    try:
        check_layout(layout, code_paths=_read_only_paths(pendant_bin, frontend_dir))
        units = render_units(layout)
    except LayoutError as exc:
        raise click.UsageError(str(exc)) from None
    if not dry_run:
        _check_writable(output_dir)
    return InstallPlan(layout, output_dir, units, _next_steps(layout, output_dir))


def _read_only_paths(pendant_bin: Path, frontend_dir: Path) -> tuple[str, ...]:
    """What the services read besides the data folder: the `pendant` script and the Python it names,
    the code, the standard library and the console's front-end packages (all must be outside /home)."""
    paths = {
        Path(os.path.realpath(pendant_bin)),
        Path(pendant_tools.__file__).resolve().parent,
        Path(sys.base_prefix).resolve(),
        Path(os.path.abspath(frontend_dir)),
    }
    interpreter = interpreter_of(pendant_bin)
    if interpreter:
        paths.add(Path(os.path.realpath(interpreter)))
    return tuple(sorted(str(path) for path in paths))


def interpreter_of(script: Path) -> str:
    """The program a script's `#!` line names ('' for none): what systemd really executes."""
    try:
        with open(script, "rb") as file:
            first = file.readline(4096)
    except OSError:
        return ""
    if not first.startswith(b"#!"):
        return ""
    words = first[2:].decode(errors="replace").split()
    return words[0] if words else ""


def _read_settings_file(env_file: Path) -> dict[str, str]:
    hint = "'--env-file'"
    if not env_file.is_file():
        raise click.BadParameter(
            f'{env_file} does not exist: write the settings there first (docs/operations.md, "From a '
            'fresh Debian 12 server to a running service"); an empty file takes every default',
            param_hint=hint,
        )
    try:
        return parse_environment_file(env_file.read_text())
    except OSError as exc:
        raise click.BadParameter(f"cannot read {env_file}: {exc.strerror}", param_hint=hint) from None
    except (LayoutError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"{env_file}: {exc}", param_hint=hint) from None


def _choose_data_dir(given: Path | None, settings_env: dict[str, str], env_file: Path) -> Path:
    in_file = settings_env.get("PENDANT_DATA_DIR")
    if given is not None:
        chosen = Path(os.path.abspath(given.expanduser()))
        if in_file and Path(os.path.abspath(Path(in_file).expanduser())) != chosen:
            raise click.BadParameter(
                f"{env_file} sets PENDANT_DATA_DIR={in_file}, which would override {chosen} in the units: "
                "remove the line or give the same folder",
                param_hint="'--data'",
            )
        return chosen
    # The same default as every other command (Settings.from_env), the settings file first.
    return Path(os.path.abspath(Path(in_file or os.environ.get("PENDANT_DATA_DIR") or "data").expanduser()))


def _check_settings(environ: dict[str, str], env_file: Path, data_dir: Path) -> Path:
    """Read the settings as the services will; return the front-end folder they serve the console from."""
    from sqlalchemy.engine import make_url

    from pendant_backend import BackendError
    from pendant_backend.settings import Settings

    try:
        settings = Settings.from_env(environ)
    except BackendError as exc:
        raise click.BadParameter(f"{env_file}: {exc}", param_hint="'--env-file'") from None
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database:
        # A relative path is relative to the services' working directory, the data folder.
        database = Path(os.path.abspath(data_dir / url.database))
        if data_dir not in database.parents:
            raise click.BadParameter(
                f"{env_file}: the SQLite database {database} is outside the data folder {data_dir}, the "
                "only folder the services may write (ProtectSystem=strict): move it into the data folder",
                param_hint="'--env-file'",
            )
    return settings.frontend_dir


def _check_writable(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ToolError(f"the output {output_dir} is a file, not a folder: choose another --output")
    if not output_dir.is_dir():
        raise ToolError(
            f"the output folder {output_dir} does not exist: create it or choose another --output"
        )
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ToolError(
            f"cannot write to {output_dir}: run as root (sudo pendant server install ...) or choose --output"
        )


def write_units(plan: InstallPlan) -> list[Path]:
    """Write each unit (mode 0644, replacing an older one atomically); return their paths."""
    written: list[Path] = []
    for name, text in plan.units.items():
        path = plan.output_dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ToolError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written


def _next_steps(layout: ServerLayout, output_dir: Path) -> list[str]:
    user, data = layout.user, Path(layout.data_dir)
    steps: list[str] = []
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        account = None
        steps.append(
            f"useradd --system --user-group --home-dir {data} --no-create-home "
            f"--shell /usr/sbin/nologin {user}"
        )
    if not data.exists():
        steps.append(f"install -d -o {user} -g {user} -m 0700 {data}")
    elif account is None or data.stat().st_uid != account.pw_uid:
        steps.append(f"chown -R {user}:{user} {data}")
    env_mode = Path(layout.env_file).stat().st_mode
    if env_mode & 0o004:
        # It may hold the database password and the webhook's URL.
        steps.append(f"chown root:{user} {layout.env_file} && chmod 0640 {layout.env_file}")
    if output_dir != SYSTEM_UNITS:
        names = " ".join(str(output_dir / name) for name in UNIT_NAMES)
        steps.append(f"install -m 0644 {names} {SYSTEM_UNITS}/")
    steps += [
        "systemctl daemon-reload",
        f"systemctl enable --now {TARGET}",
        "systemctl status 'pendant-*'",
        "journalctl -u pendant-broker -u pendant-backend -u pendant-web -f",
    ]
    return steps


def _as_json(plan: InstallPlan, written: list[Path], dry_run: bool) -> dict[str, object]:
    return {
        "dry_run": dry_run,
        "data_dir": plan.layout.data_dir,
        "env_file": plan.layout.env_file,
        "user": plan.layout.user,
        "pendant": plan.layout.pendant_bin,
        "units": [
            {"path": str(plan.output_dir / name), "written": plan.output_dir / name in written, "text": text}
            for name, text in plan.units.items()
        ],
        "next_steps": plan.next_steps,
    }

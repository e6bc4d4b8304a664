"""`-c/--config` and `--data` accepted before or after the command's name.

Click reads a group's options only before the subcommand: `granary server -c
FILE` would be refused. Every command therefore gets the same options too;
a command that uses `-c` for something else (`layout assign -c 2T`, the
capacity, as in Garage) keeps it and gets only the long `--config`.
"""

from __future__ import annotations

import click

GLOBAL_KEYS = {"config_file": ("-c", "--config"), "data_dir": ("--data",)}


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """An option given after the command overrides the one given before it."""
    if value is not None:
        ctx.find_root().obj[param.name] = value


def _global_option(name: str, taken: set[str]) -> click.Option:
    flags = [flag for flag in GLOBAL_KEYS[name] if flag not in taken]
    kind = click.Path(dir_okay=False) if name == "config_file" else click.Path(file_okay=False)
    return click.Option(
        [*flags, name],
        type=kind,
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_remember,
        help="Same as the option before the command.",
    )


def accept_global_options_everywhere(group: click.Group) -> None:
    """Add the global options to every command under `group`."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_global_options_everywhere(command)
            continue
        taken = {flag for param in command.params for flag in getattr(param, "opts", [])}
        command.params.extend(_global_option(name, taken) for name in GLOBAL_KEYS)

"""The ``syft_flwr`` command line: bootstrap, run, simulate, keys, review, audit.

Built on typer with rich help, as Flower's own ``flwr`` CLI is. Commands parse
arguments and call public functions. :func:`main` turns every error into one
plain line on stderr and an exit code: 0 done, 1 failed, 2 usage or
configuration error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from typing import Any

import click
import typer

from syft_flwr._printable import printable
from syft_flwr._version import __version__
from syft_flwr.cli._common import JsonOpt, print_json
from syft_flwr.errors import ConfigError, SyftFlwrError

__all__ = ["app", "get_command", "main", "run_cli"]

app = typer.Typer(
    name="syft_flwr",
    help="Run Flower apps across data owners over file sync (SyftBox, Google Drive).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def version(json_: JsonOpt = False) -> None:
    """Print the versions of syft_flwr and Flower."""
    import flwr

    flwr_version = getattr(flwr, "__version__", "?")
    if json_:
        print_json({"syft_flwr": __version__, "flwr": flwr_version})
    else:
        print(f"syft_flwr {__version__} (flwr {flwr_version})")


from syft_flwr.cli import _audit, _keys, _local, _setup  # noqa: E402
from syft_flwr.cli import privacy as _privacy  # noqa: E402
from syft_flwr.cli import review as _review  # noqa: E402

# The order here is the order of ``syft_flwr --help``.
app.command()(version)
_setup.register_bootstrap(app)
_local.register(app)
_keys.register(app)
_audit.register(app)
_setup.register_login(app)
_review.register(app)
app.command()(_privacy.budget)

# The command functions stay importable from here, as before the split.
from syft_flwr.cli._audit import audit as audit  # noqa: E402
from syft_flwr.cli._keys import keys as keys  # noqa: E402
from syft_flwr.cli._keys import keys_adopt_pins as keys_adopt_pins  # noqa: E402
from syft_flwr.cli._keys import keys_app as keys_app  # noqa: E402
from syft_flwr.cli._keys import keys_rotate as keys_rotate  # noqa: E402
from syft_flwr.cli._keys import keys_show as keys_show  # noqa: E402
from syft_flwr.cli._keys import keys_trust as keys_trust  # noqa: E402
from syft_flwr.cli._local import party as party  # noqa: E402
from syft_flwr.cli._local import run as run  # noqa: E402
from syft_flwr.cli._local import simulate as simulate  # noqa: E402
from syft_flwr.cli._setup import bootstrap as bootstrap  # noqa: E402
from syft_flwr.cli._setup import gdrive_login as gdrive_login  # noqa: E402

# click >= 8.2 raises this for a bare `syft_flwr`; older clicks print help themselves
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(text: object) -> str:
    # Error messages can quote names, reasons and paths other parties chose.
    return printable(" ".join(str(text).split()))


def _restore_argument_help(group: click.Group, typer_app: typer.Typer) -> None:
    """Copy each argument's help from its typer declaration onto the click one.

    Click 8.5 gave ``click.Argument`` a ``help`` parameter of its own; typer 0.20
    sets ``help`` and then calls click's constructor, which resets it to None, so
    ``--help`` would list arguments unexplained. Drop this once typer passes
    ``help`` on.
    """
    for info in typer_app.registered_commands:
        callback = info.callback
        assert callback is not None
        name = info.name or typer.main.get_command_name(callback.__name__)
        declared = typer.utils.get_params_from_function(callback)
        for param in group.commands[name].params:
            meta = declared.get(param.name or "")
            if isinstance(param, click.Argument) and meta is not None:
                param.help = param.help or getattr(meta.default, "help", None)
    for sub in typer_app.registered_groups:
        assert sub.name is not None and sub.typer_instance is not None
        child = group.commands[sub.name]
        assert isinstance(child, click.Group)
        _restore_argument_help(child, sub.typer_instance)


def get_command() -> click.Group:
    """The ``syft_flwr`` command as a click group (for introspection and docs).

    Returns
    -------
    click.Group
        :data:`app` built by typer, every argument's help in place.
    """
    command = typer.main.get_command(app)
    assert isinstance(command, click.Group)
    _restore_argument_help(command, app)
    return command


def run_cli(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` and return its exit code (never raises).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 done, 1 failed, 2 usage or configuration error, 130 interrupted.
    """
    command = get_command()
    try:
        # standalone_mode=False: errors reach us, so each is one plain line.
        args = list(sys.argv[1:] if argv is None else argv)
        # obj: the arguments as given, so simulate can print the command that resumes
        result = command.main(
            args=args, prog_name="syft_flwr", standalone_mode=False, obj={"argv": args}
        )
    except _NO_ARGS_IS_HELP as exc:
        # `syft_flwr` alone: show the help (rich on a terminal), exit as a usage error
        help_text = exc.ctx.get_help()  # rich prints it itself and returns ""
        if help_text:
            click.echo(help_text)
        return 2
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "syft_flwr"
        print(
            f"syft_flwr: error: {_one_line(exc.format_message())} "
            f"(see: {where} --help)",
            file=sys.stderr,
        )
        return 2
    except click.ClickException as exc:
        print(f"syft_flwr: error: {_one_line(exc.format_message())}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"syft_flwr: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SyftFlwrError as exc:
        print(
            f"syft_flwr: error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr
        )
        return 1
    except (KeyboardInterrupt, click.Abort):
        print("syft_flwr: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # e.g. a read-only or full work folder: no traceback
        print(f"syft_flwr: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``syft_flwr`` command (and ``python -m syft_flwr``)."""
    sys.exit(run_cli(argv))


if __name__ == "__main__":
    main()

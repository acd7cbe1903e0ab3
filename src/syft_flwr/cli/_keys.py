"""The ``keys`` command group: your keys, your peers' pinned fingerprints, rotation."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from syft_flwr._printable import printable
from syft_flwr.cli._common import (
    ConfigOpt,
    JsonOpt,
    client_for,
    print_json,
)
from syft_flwr.errors import ConfigError

keys_app = typer.Typer(
    help="Your encryption keys and your peers' pinned fingerprints. Without a "
    "subcommand: create your keys if needed and show your fingerprint.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _key_info_dict(info: Any) -> dict[str, Any]:
    return dataclasses.asdict(info)


@keys_app.callback()
def keys(ctx: typer.Context, config: ConfigOpt = None, json_: JsonOpt = False) -> None:
    """Create your keys if needed and show your fingerprint."""
    ctx.obj = {"config": config}
    if ctx.invoked_subcommand is not None:
        return
    from syft_flwr.crypto.identity import show_keys

    own = show_keys(client_for(config))[0]
    if json_:
        print_json(_key_info_dict(own))
        return
    print(f"{own.email}")
    print(f"  fingerprint: {own.fingerprint}")
    print(f"  read aloud:  {own.digits}")
    print("  compare it with your peers over a channel you trust (call, in person)")


def _keys_config(ctx: typer.Context, config: str | None) -> str | None:
    """``--config`` given after the subcommand, else the one before it."""
    parent = ctx.parent.obj if ctx.parent is not None and ctx.parent.obj else {}
    return config if config is not None else parent.get("config")


@keys_app.command("show")
def keys_show(
    ctx: typer.Context,
    email: Annotated[
        str | None,
        typer.Argument(
            help="Only this peer, also comparing its pin with what it publishes now."
        ),
    ] = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Print your and your peers' fingerprints, to read aloud."""
    from syft_flwr.crypto.identity import show_keys

    infos = show_keys(client_for(_keys_config(ctx, config)), email)
    if json_:
        print_json([_key_info_dict(i) for i in infos])
        return
    for info in infos:
        label = "you" if info.role == "own" else info.status
        print(f"{printable(info.email)}  [{label}]")
        if info.fingerprint:
            print(f"  fingerprint: {printable(info.fingerprint)}")
        if info.digits:
            print(f"  read aloud:  {info.digits}")
        if info.role == "peer" and info.published and info.status != "pinned":
            print(f"  published now: {printable(info.published)}")
        if info.status == "changed":
            print(
                f"  REFUSED until you check it: syft_flwr keys trust {printable(info.email)} "
                f"--fingerprint '{printable(info.published)}'"
            )
        elif info.status == "older":
            print(
                "  REFUSED: it publishes keys older than the ones you already saw "
                "(an old did.json put back?); ask them to publish again"
            )
        elif info.status == "not pinned":
            print(
                f"  to pin it after checking: syft_flwr keys trust {printable(info.email)}"
            )
    if len(infos) == 1 and email is None:
        print("(no peers pinned yet: peers are pinned the first time you exchange)")


@keys_app.command("trust")
def keys_trust(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The peer whose published key to pin.")],
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            help="The fingerprint the peer read to you; refused if it does not match.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Accept a peer's (new) identity key after checking it."""
    from syft_flwr.crypto.identity import trust_peer

    pin = trust_peer(client_for(_keys_config(ctx, config)), email, fingerprint)
    print(f"trusted {pin.email}")
    print(f"  fingerprint: {pin.fingerprint}")
    print(f"  read aloud:  {pin.fingerprint_digits}")
    if fingerprint is None:
        print("  (no --fingerprint given: make sure you compared it with them)")


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace",
            help="How long the old prekey still opens messages, e.g. 7d, 12h, 30m "
            "or seconds (default: SYFT_FLWR_PREKEY_GRACE, else 7d).",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Publish a new signed prekey; destroy the old one after a grace period."""
    import time

    from syft_flwr.config import Settings, parse_duration
    from syft_flwr.crypto.identity import rotate_prekey

    try:
        seconds = None if grace is None else parse_duration(grace)
    except ConfigError as exc:
        raise ConfigError(f"--grace: {exc}") from None
    r = rotate_prekey(
        client_for(_keys_config(ctx, config)),
        grace=seconds,
        settings=Settings.from_env(),
    )
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(r.retired.destroy_after))
    print(f"published a new signed prekey {r.new_prekey}")
    print(f"  the old one ({r.retired.id}) still opens messages until {until},")
    print("  then it is destroyed: messages sealed to it can no longer be opened")
    print(f"  your fingerprint is unchanged: {r.fingerprint}")


@keys_app.command("adopt-pins")
def keys_adopt_pins(
    ctx: typer.Context,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="Keep them without asking (you checked them)."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Keep the peer pins an older syft_flwr wrote, after checking them."""
    from syft_flwr.crypto.identity import adopt_legacy_pins, legacy_pins
    from syft_flwr.review.package import printable

    client = client_for(_keys_config(ctx, config))
    pins = legacy_pins(client)
    if pins is None:
        print("nothing to adopt: your pinned peer keys are already checked")
        return
    print("pinned by an older syft_flwr, without an integrity check:")
    for pin in pins.values():
        print(f"{printable(pin.email)}")
        print(f"  fingerprint: {pin.fingerprint}")
        print(f"  read aloud:  {pin.fingerprint_digits}")
    if not pins:
        print("  (no peers)")
    print("compare them with your peers over a channel you trust before keeping them")
    if not yes and not typer.confirm("keep these pins?", default=False):
        print("nothing was changed")
        raise typer.Exit(1)
    adopt_legacy_pins(client)
    print(f"kept {len(pins)} pinned peer key(s); they are checked from now on")


def register(app: typer.Typer) -> None:
    """Add the ``keys`` group to the ``syft_flwr`` app."""
    app.add_typer(keys_app, name="keys")

"""``vsp user``, ``vsp login``, ``vsp logout`` and ``vsp keys``: accounts from the command line.

``vsp user create`` is an operator command: it writes to the database (``DATABASE_URL``)
directly. The others talk to the origin, signed in with ``vsp login`` or an API key
(``--api-key`` or ``VSP_API_KEY``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from shared.core import ports

DEFAULT_ORIGIN_URL = ports.local_url(ports.ORIGIN)

user_app = typer.Typer(
    help="Operator commands on accounts; they use the database (DATABASE_URL) directly.",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="Your API keys, for scripts and the CLI: send one as VSP_API_KEY. Needs vsp login "
    "or an existing key.",
    no_args_is_help=True,
)

OriginUrl = Annotated[str, typer.Option("--url", help="Origin base URL.")]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="VSP_API_KEY",
        show_default=False,
        help="API key to act with; default: the login stored by vsp login.",
    ),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


def _password(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=confirm))


@user_app.command("create")
def user_create(
    name: Annotated[
        str, typer.Argument(help="Account and channel name: 3-32 of a-z, 0-9, '_', '-'.")
    ],
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin (manages every video), not an uploader.")
    ] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create an account; prompts for its password unless --password-stdin."""
    from services.cli.provision import create_user
    from services.runtime.settings import load_settings
    from shared.core.errors import AppError
    from shared.core.settings import BaseServiceSettings
    from shared.db.models import Role

    role = Role.admin if admin else Role.uploader
    password = _password(password_stdin, confirm=True)
    url = load_settings(BaseServiceSettings).database_url
    try:
        user_id = asyncio.run(create_user(url, name, password, role))
    except AppError as exc:
        typer.echo(f"cannot create {name}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {role.value} {name} ({user_id})")


def login(
    name: Annotated[str, typer.Option("--name", prompt="Account name", help="Account name.")],
    url: OriginUrl = DEFAULT_ORIGIN_URL,
    password_stdin: PasswordStdin = False,
) -> None:
    """Sign in at the origin and keep the access token in ~/.config/vsp (0600) until it expires."""
    from services.cli.client import request_json
    from services.cli.credentials import save_login

    password = _password(password_stdin, confirm=False)
    body = request_json(
        "POST", f"{url}/api/auth/token", data={"username": name, "password": password}
    )
    path = save_login(url, name, body["access_token"], int(body["expires_in"]))
    minutes = int(body["expires_in"]) // 60
    typer.echo(f"signed in as {name} for {minutes} min; the token is in {path}")


def logout() -> None:
    """Forget the login stored by vsp login."""
    from services.cli.credentials import forget_login

    typer.echo("signed out" if forget_login() else "not signed in")


def _headers(api_key: str | None) -> dict[str, str]:
    from services.cli.credentials import auth_headers

    headers = auth_headers(api_key)
    if not headers:
        typer.echo("sign in first (vsp login) or set VSP_API_KEY", err=True)
        raise typer.Exit(1)
    return headers


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "cli",
    url: OriginUrl = DEFAULT_ORIGIN_URL,
    api_key: ApiKey = None,
) -> None:
    """Create an API key and print it: it is shown this once."""
    from services.cli.client import request_json

    key = request_json("POST", f"{url}/api/keys", _headers(api_key), json={"name": name})
    typer.echo(f"API key {key['id']} ({key['name']}); it is not shown again:", err=True)
    typer.echo(key["key"])


@keys_app.command("list")
def keys_list(url: OriginUrl = DEFAULT_ORIGIN_URL, api_key: ApiKey = None) -> None:
    """List your API keys (never their secrets), newest first."""
    from services.cli.client import request_json

    keys = request_json("GET", f"{url}/api/keys", _headers(api_key))["keys"]
    typer.echo(f"{'id':36}  {'prefix':16}  {'created':20}  {'last used':20}  {'state':7}  name")
    for key in keys:
        state = "revoked" if key["revoked_at"] else "active"
        created = key["created_at"][:19]
        used = (key["last_used_at"] or "never")[:19]
        typer.echo(
            f"{key['id']:36}  {key['prefix']:16}  {created:20}  {used:20}  {state:7}  {key['name']}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as vsp keys list shows it.")],
    url: OriginUrl = DEFAULT_ORIGIN_URL,
    api_key: ApiKey = None,
) -> None:
    """Revoke an API key: every request with it is refused from now on."""
    from services.cli.client import request_json

    request_json("DELETE", f"{url}/api/keys/{key_id}", _headers(api_key))
    typer.echo(f"revoked {key_id}")

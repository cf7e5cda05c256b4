"""``%aivvm alias``: name a provider, model and endpoint together, list and remove names.

The aliases are the ``AivvmMagics.aliases`` setting (see :mod:`aivvm_magic.aliases`): what
this command defines, ``%config`` and ``ipython_config.py`` see, and the reverse.

Examples
--------
::

    In [1]: %aivvm alias local -p openai -m smollm2 --base-url http://127.0.0.1:8000/v1
    In [2]: %%aivvm -m local
       ...: Hello
    In [3]: %aivvm alias
      local  openai · smollm2 · http://127.0.0.1:8000/v1 · key: none
"""

from __future__ import annotations

import os
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import TraitError

from ..aliases import Alias
from . import command


@command("alias", "Name a provider, model and endpoint together; list or remove names.")
@magic_arguments()
@argument("name", nargs="?", help="The alias; none lists them all.")
@argument("-m", "--model", help="The model id the alias stands for.")
@argument("-p", "--provider", help="aivvm or openai (default: the session's).")
@argument("--base-url", metavar="URL", help="The endpoint (default: the session's server).")
@argument(
    "--key-from",
    metavar="WHERE",
    help="Where the key is: env:NAME, api_key or openai_api_key (never the key itself).",
)
@argument("--remove", action="store_true", help="Forget the alias.")
def alias(magics: Any, args: Any) -> None:
    """Define ``NAME`` (with ``-m``), show it, remove it (``--remove``), or list them all;
    then ``%%aivvm -m NAME`` asks that model there."""
    aliases = magics.session.aliases()
    defining = any(v is not None for v in (args.model, args.provider, args.base_url, args.key_from))
    if args.name is None:
        if defining or args.remove:
            raise UsageError("%aivvm alias: name the alias first")
        _list(magics, aliases)
        return
    if args.remove:
        if args.name not in aliases:
            raise UsageError(f"%aivvm alias: no alias {args.name!r}")
        magics.aliases = {k: v for k, v in magics.aliases.items() if k != args.name}
        print(f"Alias {args.name!r} removed.")
        return
    if not defining:
        if args.name not in aliases:
            known = ", ".join(aliases) or "none yet"
            raise UsageError(f"%aivvm alias: no alias {args.name!r} (aliases: {known})")
        _list(magics, {args.name: aliases[args.name]})
        return
    if args.model is None:
        raise UsageError("%aivvm alias: an alias needs -m MODEL")
    entry = {
        "model": args.model,
        "provider": args.provider or "",
        "base_url": args.base_url or "",
        "key_from": args.key_from or "",
    }
    _check_provider_and_url(entry)
    try:
        magics.aliases = {**magics.aliases, args.name: entry}
    except TraitError as exc:
        raise UsageError(f"%aivvm alias: {exc}") from None
    _list(magics, {args.name: magics.session.aliases()[args.name]})


def _check_provider_and_url(entry: dict[str, str]) -> None:
    from ..providers import get_provider
    from ..providers.transport import normalise_base_url

    try:
        if entry["provider"]:
            get_provider(entry["provider"])
        if entry["base_url"]:
            normalise_base_url(entry["base_url"])
    except ValueError as exc:
        raise UsageError(f"%aivvm alias: {exc}") from None


def _list(magics: Any, aliases: dict[str, Alias]) -> None:
    if not aliases:
        print("No aliases yet: %aivvm alias NAME -p PROVIDER -m MODEL --base-url URL")
        return
    width = max(len(name) for name in aliases)
    for name, found in aliases.items():
        print(f"  {name:<{width}}  {found.describe()}{_key_state(magics, found)}")


def _key_state(magics: Any, found: Alias) -> str:
    """Whether the key the alias names is there: `` (set)`` or `` (not set)``; never the key."""
    if found.key_env:
        present = bool(os.environ.get(found.key_env))
    elif found.key_from:
        present = bool(getattr(magics, found.key_from))
    else:
        return ""
    return " (set)" if present else " (not set)"

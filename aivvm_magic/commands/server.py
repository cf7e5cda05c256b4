"""``%aivvm status`` and ``%aivvm models``: where requests go, and what answers there."""

from __future__ import annotations

from typing import Any

from IPython.core.magic_arguments import magic_arguments

from . import chat_option, command


@command("status", "Where requests go, with which settings and conversations.")
@magic_arguments()
@chat_option
def status(magics: Any, args: Any) -> None:
    """Where requests go, with which settings, and the conversations so far."""
    from ..embedded import answered_by
    from ..secret_types import public_url

    # The model may be an alias, which says where requests go and with which key.
    settings = magics.settings()
    base_url, target, _ = magics.target(settings.base_url or None, settings.provider)
    conversation = magics.chats.get(args.chat)
    model = f"{settings.model} (alias {settings.alias})" if settings.alias else settings.model
    answering = answered_by(base_url) if base_url else None
    if answering:
        # The embedded server answers every model id with its one engine: name it.
        model = f"{model}, answered by {answering}"
    lines = [
        f"Target:       {target}" + (f" ({public_url(base_url)})" if base_url else ""),
        f"Provider:     {settings.provider}",
        f"Model:        {model}",
        f"Temperature:  {magics.temperature:g}",
        f"Conversation: {args.chat}, {len(conversation)} turns",
        f"Chats:        {', '.join(magics.chats.names()) or '(none)'}",
        f"API key:      {'set' if settings.key else 'not set'}",
    ]
    print("\n".join(lines))


@command("models", "The models the server offers.")
@magic_arguments()
def models(magics: Any, args: Any) -> None:
    """The models the server offers."""
    from ..providers import get_provider

    base_url, target, _ = magics.target(provider=magics.provider)
    provider = get_provider(magics.provider)
    if not base_url:
        print(f"No server to ask: replies come from the {target}.")
        return
    found = provider.list_models(base_url, key=str(magics.key_for(magics.provider)))
    if found.builtin:
        # Not what the server offers: say so, and why it did not say.
        print(f"{target} did not list its models: {found.reason}")
        print("The built-in table:" if found else "No built-in table either.")
    else:
        print(f"Models at {target}:")
    for model in found:
        extra = f"  ({model['served_by']})" if model.get("served_by") else ""
        print(f"  {model['id']:<24} {model.get('name', '')}{extra}")

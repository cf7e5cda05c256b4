"""Take what looks like a key out of text before it goes into a prompt.

Everything the notebook adds to a prompt (a traceback, the values on a failing line, a
``{name}`` value, the code and outputs of earlier cells) passes through a :class:`Scrubber`,
which replaces with ``[redacted]``:

1. the values of the keys the magics are configured with, of the environment variables whose
   names say they hold a secret (``…_KEY``, ``…API_KEY…``, ``…TOKEN…``, ``…SECRET…``,
   ``…PASSWORD…``, ``…CREDENTIALS…``), and of the notebook's string variables so named
   (``…_KEY`` aside: a ``sort_key`` is no secret), wherever they appear, 8 characters or more;
2. strings shaped like the keys of well-known services (``sk-…``, ``ghp_…``, ``xoxb-…``,
   ``AKIA…``, ``AIza…``, ``hf_…``, JSON web tokens, private key blocks), and the secret part
   of ``Bearer …`` and of ``user:password@`` in URLs;
3. the value given to a secret-named word (``api_key = "…"``, ``token: …``, ``"password":
   "…"``): a string literal of 8 or more characters, or a bare run of 16 or more
   characters that holds both letters and digits; after the word ``key`` alone, only such a
   run (quoted or not).

What the user types into a cell is theirs and goes as written; only what the magic adds is
scrubbed. A false alarm costs a ``[redacted]`` in the prompt, which ``%aivvm last`` shows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

__all__ = ["REDACTED", "Scrubber", "secret_name"]

REDACTED = "[redacted]"

#: Shorter values are not taken as secrets: replacing every "abc" would garble the prompt.
MIN_SECRET_CHARS = 8

# A name that says its value is a secret: one of these words, not inside a longer word
# ("GITHUB_TOKEN", "db_password", "apikey"; not "tokenizer", "max_tokens" or "authors").
_SECRET_WORDS = r"api_?key|access_?key|private_?key|secret|token|passw(?:or)?d|pwd|credentials?"
_SECRET_NAME = re.compile(rf"(?<![a-z])(?:{_SECRET_WORDS})(?![a-z])", re.IGNORECASE)

# Service keys recognisable by their shape alone.
_SHAPED = re.compile(
    "|".join(
        [
            r"\bsk-[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic (sk-ant-…), and others
            r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}",  # GitHub
            r"\bgithub_pat_[A-Za-z0-9_]{30,}",
            r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
            r"\bAIza[0-9A-Za-z_\-]{35}",  # Google
            r"\bhf_[A-Za-z0-9]{30,}",  # Hugging Face
            r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWT
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
        ]
    ),
    re.DOTALL,
)

# The secret part after a word that announces one: a Bearer token, a password in a URL.
_ANNOUNCED = re.compile(
    r"(?P<lead>\bBearer\s+)(?P<secret>[A-Za-z0-9._~+/=\-]{16,})"
    r"|(?P<lead2>://[^/\s:@]+:)(?P<secret2>[^/\s@]{3,})(?=@)",
    re.IGNORECASE,
)

# A secret-named word (or "key", which takes only random-looking values), then ":" or "="
# as in code, JSON and env files, then a value: a quoted string or a bare token.
_LABELLED = re.compile(
    rf"(?P<lead>\b\w*?(?P<word>{_SECRET_WORDS}|key)(?![a-z])\w*[\"']?\s*[:=]\s*[rbu]{{0,2}})"
    r"(?:(?P<quote>[\"'])(?P<quoted>[^\"'\n]*)|(?P<bare>[^\s\"',;)}\]]+))",
    re.IGNORECASE,
)


def secret_name(name: str) -> bool:
    """Whether a variable called ``name`` says it holds a secret (``OPENAI_API_KEY``,
    ``github_token``, ``db_password``; not ``tokenizer``, ``max_tokens`` or ``key``)."""
    return bool(_SECRET_NAME.search(name))


def _secret_env_name(name: str) -> bool:
    # Environment variables named …_KEY hold keys (ANTHROPIC_KEY); notebook variables so
    # named are as often sort keys and cache keys, whose values must stay readable.
    return secret_name(name) or name.upper().endswith("_KEY")


def _looks_random(value: str) -> bool:
    # A bare run of letters and digits both, long enough not to be a word or a number.
    return (
        len(value) >= 16
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and "(" not in value
    )


class Scrubber:
    """Replaces secrets in text with :data:`REDACTED` (the rules are the module's).

    Examples
    --------
    ::

        In [1]: scrub = Scrubber(["my-configured-key-1"])
        In [2]: scrub('key = "sk-abcdefghijklmnop1234" and my-configured-key-1')
        Out[2]: 'key = "[redacted]" and [redacted]'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found = {str(s) for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
        # Longest first, so that a key containing another is replaced whole.
        self._secrets = sorted(found, key=len, reverse=True)

    @classmethod
    def for_notebook(
        cls,
        configured: Iterable[str],
        namespace: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Scrubber:
        """A scrubber for the ``configured`` keys, the secret-named environment variables
        (of ``environ``, else ``os.environ``) and the secret-named string variables of
        ``namespace``."""
        secrets = list(configured)
        env = os.environ if environ is None else environ
        secrets.extend(value for name, value in env.items() if _secret_env_name(name))
        if namespace is not None:
            secrets.extend(
                value
                for name, value in list(namespace.items())
                if isinstance(value, str) and secret_name(name)
            )
        return cls(secrets)

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _SHAPED.sub(REDACTED, text)
        text = _ANNOUNCED.sub(_keep_lead, text)
        return _LABELLED.sub(_labelled_value, text)


def _keep_lead(match: re.Match[str]) -> str:
    lead = match.group("lead") if match.group("lead") is not None else match.group("lead2")
    return lead + REDACTED


def _labelled_value(match: re.Match[str]) -> str:
    quoted = match.group("quote") is not None
    value = match.group("quoted") if quoted else match.group("bare")
    if REDACTED in value:
        return match.group(0)
    weak = match.group("word").lower() == "key"
    if _looks_random(value) or (quoted and not weak and len(value) >= MIN_SECRET_CHARS):
        lead = match.group("lead") + (match.group("quote") or "")
        return lead + REDACTED
    return match.group(0)

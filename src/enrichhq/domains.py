"""A company's domain, as HQ keeps it: `https://www.Stripe.com/pricing` -> `stripe.com`.

What a CRM or an Apollo export puts in a "website" column is cleaned to a bare host name: the
scheme, `www.`, user info, path, query, fragment, port, trailing dots, case and surrounding
whitespace go; an internationalised name becomes its punycode (`münchen.de` -> `xn--mnchen-3ya.de`,
IDNA 2008 with UTS 46 mapping, by `idna`), unless a label mixes scripts (`paypal.com` with a Cyrillic
`a`, U+0430: a homoglyph; Japanese, Chinese and Korean mixes with Latin are allowed). What is no
company's domain at all is a `DomainError`
that says why: an empty cell, `n/a`, an email address, an IP address, `localhost` and other local
names, or anything that is not labels of letters, digits and hyphens with a dot between.

Every face normalises the same way: import (CSV, UI, REST), `--domain`, the functions' JSON.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import idna

from enrichhq import exceptions, netpolicy

#: a host name as HQ stores it: lower-case ASCII labels of 1-63 characters, at least two of them.
DOMAIN: Final = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{1,63}$")
_SCHEME: Final = re.compile(r"^[a-z][a-z0-9+.-]*://|^//")
_CUT: Final = re.compile(r"[/?#\\]")
#: names that resolve to this machine or a local network, never a company's.
LOCAL_SUFFIXES: Final = ("localhost", "local", "internal", "home.arpa", "lan")
_DOTTED_LOCAL: Final = tuple("." + suffix for suffix in LOCAL_SUFFIXES)


class DomainError(exceptions.InputError):
    """A value that is no company's domain; `reason` says why (`is an email address, ...`)."""

    def __init__(self, raw: str, reason: str) -> None:
        super().__init__(f"{raw!r} {reason}")
        self.raw = raw
        self.reason = reason


def clean(raw: str) -> str:
    """The domain HQ keeps for what a user typed or a file held; DomainError when it is none."""
    text = raw.strip().lower()
    if DOMAIN.match(text) and not text.startswith("www.") and not text.rsplit(".", 1)[-1].isdigit():
        _refuse_local(raw, text)
        _check_a_labels(raw, text)
        return text  # the usual case, already clean: no more work
    if not text:
        raise DomainError(raw, "is empty: a company needs a domain such as acme.com")
    had_scheme = _SCHEME.match(text) is not None
    host = _CUT.split(_SCHEME.sub("", text, count=1), maxsplit=1)[0]
    if "@" in host:
        if not had_scheme:
            raise DomainError(raw, "is an email address, not a domain; give the part after the @")
        host = host.rsplit("@", 1)[1]  # https://user@acme.com: user info is not the host
    host = _strip_port(raw, host)
    host = host.strip().rstrip(".")
    if not host:
        raise DomainError(raw, "is not a domain: no host name in it")
    if netpolicy.literal_address(host) is not None or host.rsplit(".", 1)[-1].isdigit():
        # An address (127.1 too: no top-level domain is a number) is never a company's domain,
        # and would point the providers at it.
        raise DomainError(raw, "is an IP address, not a domain")
    if not host.isascii():
        _refuse_mixed_scripts(raw, _mapped(raw, host))
        host = _punycode(raw, host)
    if host.startswith("www.") and "." in host[4:]:
        host = host[4:]
    _refuse_local(raw, host)
    if not DOMAIN.match(host):
        hint = "" if "." in host else " (a domain has a dot, as in acme.com)"
        raise DomainError(raw, f"is not a domain{hint}")
    _check_a_labels(raw, host)
    return host


def _check_a_labels(raw: str, host: str) -> None:
    """An `xn--` label must be punycode that decodes (xn--zz is no name at all), to one script."""
    if "xn--" not in host:
        return
    try:
        decoded = idna.decode(host)
    except (idna.IDNAError, UnicodeError):
        raise DomainError(raw, "is not a valid internationalised domain name (a broken xn-- label)") from None
    _refuse_mixed_scripts(raw, decoded)


#: scripts a label may mix: a language written in several (UTS 39's "highly restrictive" sets:
#: Japanese, Chinese, Korean, each with Latin). Any other mix is refused.
_ALLOWED_MIXES: Final = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
#: the first word of a character's Unicode name, where it is not the script's own name.
_SCRIPT_OF_NAME: Final = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "KATAKANA-HIRAGANA": "", "HALFWIDTH": ""}


def _script(char: str) -> str:
    """The script of a letter ("" for digits, hyphens, combining marks: they go with any script).

    Python has no Unicode script property; a letter's name starts with its script for every
    script an IDN label can hold (`CYRILLIC SMALL LETTER A`, `CJK UNIFIED IDEOGRAPH-4F8B`).
    """
    if char.isascii():
        return "LATIN" if char.isalpha() else ""
    if unicodedata.category(char)[0] != "L":
        return ""
    first = unicodedata.name(char, "").split(" ", 1)[0]
    return _SCRIPT_OF_NAME.get(first, first)


def _refuse_mixed_scripts(raw: str, host: str) -> None:
    """A label mixing scripts (`paypal` with a Cyrillic `a`, U+0430) is a homoglyph, not a company's name."""
    for label in host.split("."):
        if label.isascii():
            continue
        scripts = {s for c in label if (s := _script(c))}
        if len(scripts) > 1 and not any(scripts <= allowed for allowed in _ALLOWED_MIXES):
            names = " and ".join(sorted(s.title() for s in scripts))
            raise DomainError(
                raw,
                f"mixes scripts in the label {label!r} ({names}): a look-alike of another domain, "
                "not imported; type the domain in one script",
            )


def _refuse_local(raw: str, host: str) -> None:
    if host in LOCAL_SUFFIXES or host.endswith(_DOTTED_LOCAL):
        raise DomainError(raw, "is a local network name, not a company's domain")


def _strip_port(raw: str, host: str) -> str:
    if host.startswith("["):
        # [2001:db8::1]:8080, the only way a URL holds an IPv6 address
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        name, port = host.split(":")
        if port and not port.isdigit():
            raise DomainError(raw, f"is not a domain: {port!r} after the ':' is no port")
        return name
    return host  # no port; or a bare IPv6 address, which the address check refuses


def _mapped(raw: str, host: str) -> str:
    """The host as IDNA maps it before encoding (UTS 46: case, width, compatibility forms)."""
    try:
        return idna.uts46_remap(host, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError):
        raise DomainError(raw, "is not a valid internationalised domain name") from None


def _punycode(raw: str, host: str) -> str:
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise DomainError(raw, f"is not a valid internationalised domain name ({exc})") from None
    except UnicodeError:
        raise DomainError(raw, "is not a valid internationalised domain name") from None

"""Email addresses in the one form accounts store, compare and count them.

Unicode lets one mailbox be written many ways: `alice@\uff45xample.com` (a fullwidth e) is
delivered to alice@example.com, and `alice@example.com` followed by a zero-width space looks
the same on every screen. Each spelling used to make an account of its own, whose codes went to
the same inbox and whose sends were counted apart. So an address is normalised before anything
else looks at it: NFKC, lower case, the domain in its ASCII (IDNA) form. What normalisation
cannot make into a plain, deliverable address is refused: invisible or control characters,
a domain that IDNA refuses, and hosts that are not public domains (`[127.0.0.1]`, `localhost`).
"""

import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

# Unicode categories no address may hold: format characters (zero-width space and joiner,
# bidirectional marks, soft hyphen), controls, surrogates, private use and unassigned.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Cs", "Co", "Cn"})
MAX_LENGTH = 254

# Django's validator, less its allowance for `localhost`; domain literals are refused before.
_validate = EmailValidator(allowlist=[])


class InvalidAddress(ValueError):
    """The text cannot be made into an address an account may have."""


def normalize_address(raw: str) -> str:
    """Return the stored form of an address, or raise InvalidAddress saying what is wrong."""
    value = unicodedata.normalize("NFKC", raw).strip()
    if any(unicodedata.category(char) in INVISIBLE_CATEGORIES or char.isspace() for char in value):
        raise InvalidAddress("The address contains invisible or blank characters.")
    local, at, domain = value.rpartition("@")
    if not (at and local and domain):
        raise InvalidAddress("Enter a valid email address.")
    if domain.startswith("["):
        raise InvalidAddress("Use a domain name, not an IP address.")
    try:
        # Python's codec applies IDNA 2003's nameprep (case folding included) and Punycode.
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise InvalidAddress("The domain of this address is not a valid domain name.") from None
    if "." not in ascii_domain.strip("."):
        raise InvalidAddress("Use a full domain name, such as example.com.")
    address = f"{local.lower()}@{ascii_domain}"
    if len(address) > MAX_LENGTH:
        raise InvalidAddress(f"An address has at most {MAX_LENGTH} characters.")
    try:
        _validate(address)
    except ValidationError:
        raise InvalidAddress("Enter a valid email address.") from None
    return address


def address_for_lookup(raw: str | None) -> str:
    """The stored form of `raw` for a lookup; text that is no address matches no account.

    Lookups (login, resend, reset) must not fail on bad input, only find nothing: what they
    get then keeps its invisible characters, so no stored, normalised address can equal it.
    """
    try:
        return normalize_address(raw or "")
    except InvalidAddress:
        return unicodedata.normalize("NFKC", raw or "").strip().lower()

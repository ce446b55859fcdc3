"""What Baton takes for a customer's e-mail address: exactly one address, as SMTP takes it.

Parsed offline with email-validator (no DNS: whether the domain receives mail is the mail server's
business). Refused: lists (`a@x, b@y`), display names (`Ann <a@x>`), quoted local parts, IP
literals, special-use domains (`.test`, `.localhost`, ...). Internationalised addresses are fine.
Validation rejects an order whose address is refused (`invalid_email`); notification never sends
to one, and never puts more than this one address on an envelope.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

MAX_LENGTH = 320


def email_problem(address: str) -> str | None:
    """Why ``address`` is not exactly one valid address, or None."""
    try:
        normalized_address(address)
    except ValueError as exc:
        return str(exc)
    return None


def normalized_address(address: str) -> str:
    """The address in its normal form (domain lower-cased, IDNA); ValueError when it is not one."""
    if len(address) > MAX_LENGTH:
        raise ValueError(f"longer than {MAX_LENGTH} characters")
    try:
        parsed = validate_email(
            address,
            check_deliverability=False,
            allow_display_name=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return str(parsed.normalized)

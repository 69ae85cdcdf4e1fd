"""Who is asking: the emulator's users (each with a token), their organizations, and the Hub's access rules.

    hfremote emulator --user alice:hf_alice --user bob:hf_bob --org team:alice,bob

The first user is the default one (whoami of the primary token, owner of the embedded emulator's
jobs). A namespace is a user or an org; members act in it. Reading a public bucket needs no token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping

from ._util import HTTPError

USER = "hfremote.user"  # ASGI scope key: the user the request's token names, None when anonymous
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,95}$")


def parse_user(spec: str, default_token: str | None = None) -> tuple[str, str | None]:
    """`NAME` or `NAME:TOKEN` (the --user option)."""
    name, sep, token = spec.partition(":")
    if not NAME_RE.match(name) or (sep and not token.strip()):
        raise ValueError(f"invalid user {spec!r}: use NAME or NAME:TOKEN (letters, digits, '-', '_', '.')")
    return name, token.strip() if sep else default_token


def parse_org(spec: str) -> tuple[str, tuple[str, ...]]:
    """`ORG` or `ORG:MEMBER,MEMBER` (the --org option); an empty member list means the default user."""
    org, _, members = spec.partition(":")
    names = tuple(m.strip() for m in members.split(",") if m.strip())
    for name in (org, *names):
        if not NAME_RE.match(name):
            raise ValueError(f"invalid organization {spec!r}: use ORG or ORG:MEMBER,MEMBER")
    return org, names


def owner_id(namespace: str) -> str:
    return hashlib.sha256(namespace.encode()).hexdigest()[:24]


class Users:
    """Tokens to names, orgs to members; every check is a constant-time token comparison."""

    def __init__(self, users: Iterable[tuple[str, str]], orgs: Mapping[str, Iterable[str]]) -> None:
        self._by_name = dict(users)
        if not self._by_name:
            raise ValueError("the emulator needs at least one user")
        if len(set(self._by_name.values())) != len(self._by_name):
            raise ValueError("two users share a token: give each user its own")
        self.default = next(iter(self._by_name))
        self.orgs = {org: frozenset(members) or frozenset({self.default}) for org, members in orgs.items()}
        for org, members in self.orgs.items():
            if org in self._by_name:
                raise ValueError(f"{org!r} is both a user and an organization")
            if unknown := sorted(members - set(self._by_name)):
                raise ValueError(f"organization {org!r} names unknown users: {', '.join(unknown)}")

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def token(self, name: str) -> str:
        return self._by_name[name]

    def by_token(self, token: str) -> str | None:
        found = None
        for name, expected in self._by_name.items():  # no early exit: the time does not depend on which
            if secrets.compare_digest(token.encode(), expected.encode()):
                found = name
        return found

    def from_authorization(self, value: bytes | None) -> tuple[bool, str | None]:
        """(whether credentials were sent, the user they name): sent but unknown is (True, None)."""
        if value is None:
            return False, None
        scheme, _, token = value.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return True, None
        return True, self.by_token(token.strip())

    def is_user(self, namespace: str) -> bool:
        return namespace in self._by_name

    def known(self, namespace: str) -> bool:
        return namespace in self._by_name or namespace in self.orgs

    def member(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.orgs.get(namespace, ()))

    def orgs_of(self, user: str) -> list[str]:
        return [org for org, members in self.orgs.items() if user in members]

    def acting_in(self, user: str | None, namespace: str) -> str:
        """The namespace a request acts in (`me` is the caller): 401 without a user, 403 outside it."""
        if user is None:
            raise HTTPError(401, "Invalid credentials in Authorization header")
        ns = user if namespace == "me" else namespace
        if not self.member(user, ns):
            raise HTTPError(403, f"You ({user!r}) are not a member of namespace {ns!r}")
        return ns

from __future__ import annotations

from telebridge.user import Permission, Permissions


def test_most_specific_match_wins() -> None:
    perms = Permissions(
        {"*": "block", "example.org": "user", "@boss:example.org": "admin", "@mallory:example.org": "block"}
    )
    assert perms.level("@bob:example.org") is Permission.USER
    assert perms.is_admin("@boss:example.org")
    assert not perms.may_use("@mallory:example.org")
    assert not perms.may_use("@eve:elsewhere.net")


def test_nothing_configured_means_nobody() -> None:
    assert not Permissions({}).may_use("@bob:example.org")

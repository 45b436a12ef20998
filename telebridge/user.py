"""Matrix users of the bridge, as far as the bridge cares: what they may do (``bridge.permissions``)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class Permission(IntEnum):
    BLOCK = 0
    USER = 1
    ADMIN = 2


class Permissions:
    """Most specific match wins: a user ID, then its server name, then ``*``; nothing matching → block."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = {who: Permission[level.upper()] for who, level in table.items()}

    def level(self, user_id: str) -> Permission:
        if user_id in self._table:
            return self._table[user_id]
        _, _, server = user_id.partition(":")
        if server in self._table:
            return self._table[server]
        return self._table.get("*", Permission.BLOCK)

    def may_use(self, user_id: str) -> bool:
        return self.level(user_id) >= Permission.USER

    def is_admin(self, user_id: str) -> bool:
        return self.level(user_id) >= Permission.ADMIN

"""``call_record`` table: one row per bridged call, written as the call progresses."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from mautrix.util.async_db import Database


def _now() -> int:
    return int(time.time() * 1000)


class CallRecords:
    db: ClassVar[Database]

    @classmethod
    async def start(cls, call_id: str, direction: str, matrix_user: str, room_id: str, number: str) -> None:
        await cls.db.execute(
            "INSERT INTO call_record (call_id, direction, matrix_user, room_id, number, started_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id) DO NOTHING",
            call_id,
            direction,
            matrix_user,
            room_id,
            number,
            _now(),
        )

    @classmethod
    async def set_sip_call_id(cls, call_id: str, sip_call_id: str) -> None:
        await cls.db.execute("UPDATE call_record SET sip_call_id=$2 WHERE call_id=$1", call_id, sip_call_id)

    @classmethod
    async def answered(cls, call_id: str, dialog: dict[str, Any] | None = None) -> None:
        """The call was answered, with its SIP dialog (``sip.dialog.Dialog.snapshot``) in the same write:
        a bridge that dies after the answer then always finds the dialog to send a BYE in (RFC 3261
        §15) when it restarts."""
        await cls.db.execute(
            "UPDATE call_record SET answered_at=COALESCE(answered_at, $2), sip_dialog=COALESCE($3, sip_dialog) "
            "WHERE call_id=$1",
            call_id,
            _now(),
            json.dumps(dialog) if dialog is not None else None,
        )

    @classmethod
    async def ended(
        cls,
        call_id: str,
        outcome: str,
        reason: str,
        sip_status: int | None,
        codec: str | None,
        stats: dict[str, Any] | None,
    ) -> None:
        await cls.db.execute(
            "UPDATE call_record SET ended_at=$2, outcome=$3, reason=$4, sip_status=$5, codec=$6, stats=$7 "
            "WHERE call_id=$1 AND ended_at IS NULL",
            call_id,
            _now(),
            outcome,
            reason,
            sip_status,
            codec,
            json.dumps(stats) if stats is not None else None,
        )

    @classmethod
    async def close_unfinished(cls) -> list[dict[str, Any]]:
        """Calls a crash cut (no end recorded), now recorded as ``interrupted``; returns them as they were.
        Run after the credit ledger's recovery, which charges such a call by its record."""
        rows = await cls.db.fetch("SELECT * FROM call_record WHERE ended_at IS NULL")
        if rows:
            await cls.db.execute(
                "UPDATE call_record SET ended_at=$1, outcome='interrupted', reason='bridge_restart' "
                "WHERE ended_at IS NULL",
                _now(),
            )
        return [dict(row) for row in rows]

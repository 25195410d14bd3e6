"""Reminders: a SQL-backed durable object that wakes itself up with an alarm.

Each user has one ``Reminders`` object.  Reminders are rows of its own SQL
table; the object keeps one alarm set to the earliest pending reminder, and
``alarm()`` marks every due reminder as sent, then re-arms for the next one.
"""

from __future__ import annotations

from typing import Any

import roost


class Reminders(roost.DurableObject, sql=True):
    def __init__(self, ctx: roost.ObjectState, env: roost.Env) -> None:
        super().__init__(ctx, env)
        ctx.storage.sql.exec(
            """
            CREATE TABLE IF NOT EXISTS reminders (
                id INTEGER PRIMARY KEY,
                due_ms INTEGER NOT NULL,
                text TEXT NOT NULL,
                sent INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS reminders_due ON reminders (sent, due_ms);
            """
        )

    async def add(self, text: str, due_ms: int) -> int:
        """Schedule a reminder; returns its id."""
        row = self.ctx.storage.sql.exec(
            "INSERT INTO reminders (due_ms, text) VALUES (?, ?) RETURNING id", due_ms, text
        ).one()
        await self._arm()
        return int(row["id"])

    async def cancel(self, reminder_id: int) -> bool:
        """Cancel a pending reminder; returns whether there was one."""
        cursor = self.ctx.storage.sql.exec(
            "DELETE FROM reminders WHERE id = ? AND sent = 0", reminder_id
        )
        await self._arm()
        return cursor.rows_written == 1

    async def pending(self) -> list[dict[str, Any]]:
        """Reminders not sent yet, earliest first."""
        return self.ctx.storage.sql.exec(
            "SELECT id, due_ms, text FROM reminders WHERE sent = 0 ORDER BY due_ms"
        ).to_list()

    async def sent(self) -> list[str]:
        """Texts of the reminders sent so far, in the order they were due."""
        rows = self.ctx.storage.sql.exec(
            "SELECT text FROM reminders WHERE sent = 1 ORDER BY due_ms, id"
        )
        return [text for (text,) in rows.raw()]

    async def alarm(self, info: roost.AlarmInfo) -> None:
        now_ms = int(self.env["CLOCK"].time() * 1000)
        self.ctx.storage.sql.exec(
            "UPDATE reminders SET sent = 1 WHERE sent = 0 AND due_ms <= ?", now_ms
        )
        await self._arm()

    async def _arm(self) -> None:
        # One alarm per object: always the earliest pending reminder.
        nxt = self.ctx.storage.sql.exec(
            "SELECT min(due_ms) AS due FROM reminders WHERE sent = 0"
        ).one()["due"]
        if nxt is None:
            await self.ctx.storage.delete_alarm()
        else:
            await self.ctx.storage.set_alarm(nxt)

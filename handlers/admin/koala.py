"""/admin/koala: Koala removals that keep failing (the visit ended or the record was deleted while
Koala refused or was down), with their attempts and a button to try again now."""
from __future__ import annotations

from urllib.parse import urlencode

from .base import AdminPageHandler

SHOWN = 200


class KoalaWorkHandler(AdminPageHandler):
    """The failing removals; POST retries one of them now (Visits.remove_koala_subjects)."""

    nav = "/admin/koala"

    async def get(self):
        jobs = await self.ctx.visits.failing_koala_removals(SHOWN)
        items = [{"id": job["_id"], "record_id": _record_of(job["_id"]), "subject_ids": job["subject_ids"],
                  "attempts": job["attempts"], "created_at": job["created_at"]} for job in jobs]
        self.render_admin("admin/koala.html", items=items, shown=SHOWN)

    async def post(self):
        left = await self.ctx.visits.retry_koala_removal(self.get_body_argument("job", ""))
        self.redirect("/admin/koala?" + urlencode({"done": "koala_failing" if left else "koala_cleared"}))


def _record_of(job_id: str) -> int | None:
    """The record a queued removal belongs to ("record:<id>")."""
    kind, _, value = job_id.partition(":")
    return int(value) if kind == "record" and value.isdigit() else None


default_handlers = [
    (r"/admin/koala", KoalaWorkHandler),
]

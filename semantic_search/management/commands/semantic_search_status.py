"""Per registered model and embedder: indexed, stale, pending, failed, missing, orphaned,
entries whose text went beyond the lexical limit (truncated), the configured embedder version
and the one searches read (serving; another while the index moves to a new model), and the
kind of its vector index (halfvec, or binary with its re-scoring factor)."""

from __future__ import annotations

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand

from semantic_search.maintenance import status


class Command(BaseCommand):
    help = "Show the state of the search index per model and embedder."

    def add_arguments(self, parser):
        parser.add_argument("--database", default="default")
        parser.add_argument("--json", action="store_true", help="print JSON rows")

    def handle(self, *args, database, json: bool = False, **options):
        rows = status(using=database)
        if json:
            self.stdout.write(_json([asdict(row) for row in rows]))
            return
        headers = ["model", "embedder", "objects", "indexed", "stale", "pending", "failed",
                   "missing", "orphaned", "truncated", "version", "serving", "index"]
        table = [headers] + [[str(v) for v in asdict(row).values()] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
        for line in table:
            cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            self.stdout.write("  ".join(cells))


def _json(value) -> str:
    return json.dumps(value)

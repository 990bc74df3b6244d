"""Migration operations of the app."""

from __future__ import annotations

from django.contrib.postgres.operations import CreateExtension
from django.db import DatabaseError

EXTENSION_HELP = (
    "semantic_search needs the pgvector extension (0.8 or newer) in database {database!r}. "
    "{problem} Ask a database administrator to run `CREATE EXTENSION IF NOT EXISTS vector;` in "
    "that database (pgvector is not a trusted extension: only a superuser can create it; "
    "managed services such as RDS, Cloud SQL, Azure and Supabase allow it for their admin "
    "role), then run `manage.py migrate` again."
)


class MissingExtension(DatabaseError):
    """pgvector is not installed in the database and cannot be created by this role."""


class CreateVectorExtension(CreateExtension):
    """``CREATE EXTENSION vector`` only when it is missing, with an actionable error when the
    role may not create it or the server lacks pgvector. Reversing leaves the extension in place:
    other apps of the database may use it."""

    def __init__(self) -> None:
        super().__init__("vector")

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        try:
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        except DatabaseError as exc:
            database = schema_editor.connection.settings_dict["NAME"]
            problem = str(exc).strip().replace("\n", " ")
            message = EXTENSION_HELP.format(database=database, problem=problem)
            raise MissingExtension(message) from exc

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        return None

    def describe(self) -> str:
        return "Creates the pgvector extension if it is missing"

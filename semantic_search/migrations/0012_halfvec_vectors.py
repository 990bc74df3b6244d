"""Chunk vectors stored as ``halfvec`` (16-bit floats): half the bytes per vector, and HNSW
indexes on halfvec (see indexes.py). The vectors an install already holds are converted in
place (the same model's space, rounded to 16 bits); the HNSW indexes on the old expression
are dropped first and created on the new one by the post-migrate step that keeps them in step
with the settings (indexes.ensure_vector_indexes)."""

import pgvector.django.halfvec
from django.db import migrations

DROP_HNSW_INDEXES = """
DO $$
DECLARE name text;
BEGIN
    FOR name IN SELECT indexname FROM pg_indexes
                WHERE tablename = 'semantic_search_chunkembedding'
                  AND indexname LIKE 'semantic\\_search\\_hnsw\\_%'
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I', name);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('semantic_search', '0011_serving_version'),
    ]

    operations = [
        migrations.RunSQL(DROP_HNSW_INDEXES, reverse_sql=DROP_HNSW_INDEXES),
        migrations.AlterField(
            model_name='chunkembedding',
            name='vector',
            field=pgvector.django.halfvec.HalfVectorField(),
        ),
    ]

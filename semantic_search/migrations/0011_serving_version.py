"""The embedder version each model's searches read (versions.py); an existing index serves the
version most of its vectors have."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('semantic_search', '0010_language_centroid'),
    ]

    operations = [
        migrations.CreateModel(
            name='ServingVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('embedder', models.CharField(max_length=64)),
                ('version', models.CharField(max_length=255)),
                ('switched_at', models.DateTimeField()),
                ('content_type', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='contenttypes.contenttype')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('content_type', 'embedder'), name='semantic_search_serving_version_unique')],
            },
        ),
        migrations.RemoveConstraint(
            model_name="chunkembedding", name="semantic_search_chunk_unique",
        ),
        migrations.AddConstraint(
            model_name="chunkembedding",
            constraint=models.UniqueConstraint(
                fields=("entry", "embedder", "embedder_version", "chunk"),
                name="semantic_search_chunk_version_unique",
            ),
        ),
        migrations.RunSQL(
            sql="""
            INSERT INTO semantic_search_servingversion
                (content_type_id, embedder, version, switched_at)
            SELECT DISTINCT ON (content_type_id, embedder) content_type_id, embedder,
                   embedder_version, now()
            FROM (SELECT content_type_id, embedder, embedder_version, count(*) AS vectors
                  FROM semantic_search_chunkembedding GROUP BY 1, 2, 3) counted
            ORDER BY content_type_id, embedder, vectors DESC, embedder_version
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]

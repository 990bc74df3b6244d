"""Language means of each multilingual vector space (centring.py), computed here for the
vectors an existing index already holds; the indexer keeps them current."""

import django.db.models.deletion
import pgvector.django.vector
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('semantic_search', '0009_reindex_unsegmented_text'),
    ]

    operations = [
        migrations.CreateModel(
            name='LanguageCentroid',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('embedder', models.CharField(max_length=64)),
                ('embedder_version', models.CharField(max_length=255)),
                ('language', models.CharField(blank=True, default='', max_length=16)),
                ('centroid', pgvector.django.vector.VectorField()),
                ('documents', models.BigIntegerField(default=0)),
                ('changed', models.BigIntegerField(default=0)),
                ('computed_at', models.DateTimeField()),
                ('content_type', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='contenttypes.contenttype')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('content_type', 'embedder', 'embedder_version', 'language'), name='semantic_search_language_centroid_unique')],
            },
        ),
        migrations.RunSQL(
            sql="""
            INSERT INTO semantic_search_languagecentroid
                (content_type_id, embedder, embedder_version, language, centroid, documents,
                 changed, computed_at)
            SELECT content_type_id, embedder, embedder_version, language, avg(mean), count(*),
                   0, now()
            FROM (SELECT c.content_type_id, c.embedder, c.embedder_version, c.language,
                         avg(c.vector) AS mean
                  FROM semantic_search_chunkembedding c
                  GROUP BY c.content_type_id, c.embedder, c.embedder_version, c.language,
                           c.entry_id) documents
            GROUP BY content_type_id, embedder, embedder_version, language
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]

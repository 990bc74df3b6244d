"""Compact postings (the largest of the app's tables): no surrogate id (the key is
(entry, lexeme), which was an index already), no copies of the entry's object and language
(queries that need them join the entry), 4-byte frequency and impact. One table rewrite."""


from django.db import migrations, models

import semantic_search.models


class Migration(migrations.Migration):

    dependencies = [
        ('semantic_search', '0012_halfvec_vectors'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='lexicalterm',
            name='semantic_search_term_entry',
        ),
        migrations.RemoveField(
            model_name='lexicalterm',
            name='id',
        ),
        migrations.RemoveField(
            model_name='lexicalterm',
            name='language',
        ),
        migrations.RemoveField(
            model_name='lexicalterm',
            name='object_id',
        ),
        migrations.AddField(
            model_name='lexicalterm',
            name='pk',
            field=models.CompositePrimaryKey('entry', 'lexeme', blank=True, editable=False, primary_key=True, serialize=False),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(
                'ALTER TABLE "semantic_search_lexicalterm"'
                ' ALTER COLUMN "frequency" TYPE real, ALTER COLUMN "impact" TYPE real,'
                ' ADD CONSTRAINT "semantic_search_lexicalterm_pkey" PRIMARY KEY ("entry_id", "lexeme")',
                reverse_sql='ALTER TABLE "semantic_search_lexicalterm"'
                ' DROP CONSTRAINT "semantic_search_lexicalterm_pkey",'
                ' ALTER COLUMN "frequency" TYPE double precision,'
                ' ALTER COLUMN "impact" TYPE double precision',
            )],
            state_operations=[
                migrations.AlterField(
                    model_name='lexicalterm',
                    name='frequency',
                    field=semantic_search.models.RealField(),
                ),
                migrations.AlterField(
                    model_name='lexicalterm',
                    name='impact',
                    field=semantic_search.models.RealField(),
                ),
            ],
        ),
    ]

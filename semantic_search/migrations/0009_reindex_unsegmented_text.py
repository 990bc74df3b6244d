"""Chinese, Japanese, Thai, Lao, Khmer and Burmese text is now indexed as character bigrams
(segmentation.py): entries in those languages go back to pending, so the sweep or
``semantic_search_reindex`` rewrites their full text (their vectors are reused, not
re-embedded)."""

from django.db import migrations

UNSEGMENTED = ["zh", "ja", "th", "lo", "km", "my"]


class Migration(migrations.Migration):

    dependencies = [
        ("semantic_search", "0008_entry_lexical_truncated"),
    ]

    operations = [
        migrations.RunSQL(
            sql=[("UPDATE semantic_search_searchentry SET state = 'pending'"
                  " WHERE state = 'indexed' AND language = ANY(%s)", [UNSEGMENTED])],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]

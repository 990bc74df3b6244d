"""Retrieval quality on your own judgments (``manage.py semantic_search_evaluate``).

Optional: add ``"semantic_search.contrib.evaluation"`` to ``INSTALLED_APPS`` (after
``"semantic_search"``) and run ``migrate``; it brings the table of test collection documents.
"""

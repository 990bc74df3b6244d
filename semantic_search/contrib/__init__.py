"""Optional parts of semantic_search, each an app of its own to add to INSTALLED_APPS."""

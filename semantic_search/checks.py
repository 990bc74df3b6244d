"""Django system checks: settings, extension, models and stored vectors, with actionable hints."""

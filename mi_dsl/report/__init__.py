"""The report stage: a finished run -> runs/<name>/<timestamp>/ (index.html, results.json, tables, figures)."""

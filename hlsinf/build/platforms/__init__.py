"""Board facts and vendor packaging (the Alveo U200 first)."""

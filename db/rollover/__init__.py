"""The new school year: a rollover of every class at once, previewed, applied whole, and undone whole."""

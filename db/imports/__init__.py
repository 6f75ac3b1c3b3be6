"""Bulk upload of a roster file: reading the CSV, the plan it would carry out, and the job that applies it."""

"""Who is asking, and for which school: every database operation runs inside a school's scope."""

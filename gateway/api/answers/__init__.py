"""The JSON APIs' answers: their typed shapes, and the views that build them from records."""

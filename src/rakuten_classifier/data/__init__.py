"""Data: the challenge files read as they are, the stored split, the SQL store, text/image preprocessing,
a synthetic catalogue."""

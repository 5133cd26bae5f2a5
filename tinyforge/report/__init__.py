"""The report stage: plots (matplotlib, Agg) and one self-contained HTML page, from plain data."""

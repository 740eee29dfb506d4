"""The output tables of the corpus job: schemas, per-video rows, the exactly-once commit
protocol and readers (see `schema` for the columns)."""

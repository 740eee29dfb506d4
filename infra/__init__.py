"""Infrastructure helpers for tests and demos (a local S3-compatible server)."""

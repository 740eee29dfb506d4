"""Video decoding and encoding."""

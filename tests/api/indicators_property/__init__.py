"""The property test of issue 16: every indicator equals a plain reference over the raw tables."""

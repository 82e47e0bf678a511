"""Conformance kit: prove that a backend matches the spec."""

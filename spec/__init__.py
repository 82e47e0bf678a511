"""Spec data: SPEC.md and the golden vectors, shipped as package data."""

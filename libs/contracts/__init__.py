"""Baton's public language: event models (pydantic v2), topic names and the AsyncAPI document."""

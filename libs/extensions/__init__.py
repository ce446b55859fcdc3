"""Baton's public extension points: what a plugin package may import (stable within a major version)."""

"""Simulated outside actors — channels, operations, warehouses, support — speaking Baton's public topics."""

"""Per-channel policy: one versioned configuration file every service reads (``channels.py``)."""

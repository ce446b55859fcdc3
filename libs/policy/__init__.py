"""How Baton behaves where shops differ: the per-channel policy file (``channels.py``) and the
refusal every piece of configuration raises when it cannot be used."""


class ConfigurationRefused(Exception):
    """Configuration that cannot be used (a policy file, a rule plugin); the message is the one line
    an operator needs. A service refuses to start with it rather than run half-configured."""

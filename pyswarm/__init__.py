"""pyswarm: Docker swarm mode rebuilt in Python."""

__version__ = "0.1.0"

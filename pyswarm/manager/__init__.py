"""The manager layer: the Manager (manager.py) and its rooms, the HTTP API (api/), and the store (store/)."""

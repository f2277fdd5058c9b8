"""One router per resource: swarm (join, leave, tokens), nodes, services, tasks, cluster (info, networks,
the change long poll)."""

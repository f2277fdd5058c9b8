"""`pyswarm lab`: a multi-host lab of real Docker Engines on one Linux machine.

Each node is a network + UTS namespace with its own dockerd and sshd on a host bridge, reachable
as ssh://root@192.168.39.k like a real remote host. See pyswarm.lab.lab.Lab.
"""

from pyswarm.lab.config import LabConfig, LabError, LabNode, LabNotFound
from pyswarm.lab.lab import Lab, LabExecError, LabNodeStatus

__all__ = ["Lab", "LabConfig", "LabError", "LabExecError", "LabNode", "LabNodeStatus", "LabNotFound"]

"""What runs on a node: the agent that supervises a job there, and its tools. Standard library only.

These modules are copied flat into one folder on each node (transport.handle.AGENT_FILES) and import
each other from there; in the control plane they are this package. The control plane reads
their meaning from ``protocol`` alone (and uses ``storageclient``, the shared REST client for
Azure Storage); the rest it only deploys and runs.
"""

"""The Vigil NVML node agent: a DaemonSet that reads GPUs on a node and posts snapshots to Vigil.

Kept free of Django (stdlib plus `pynvml`) so that it runs in a small image on GPU nodes.
"""

"""The NVML node agent (agent/), against a fake pynvml and a live Vigil."""

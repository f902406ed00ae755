"""fastrnn's Triton backend: the fused recurrence kernels (kernels.py), the launch
functions that run a whole multi-layer RNN on them (launch.py), and their registration
as the CUDA kernels of the fastrnn ops (registration.py).  Importing this package
imports nothing from triton; launch.py does, on the first CUDA call.
"""

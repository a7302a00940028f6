"""Triton kernels and their launchers (installed as ``fastcnn.triton_kernels``).

Launchers take torch tensors of any strides, allocate outputs and launch; they do
no autograd and no argument checking beyond what indexing needs (``fastcnn.ops``
checks arguments). ``reference.py`` holds the PyTorch math every kernel is tested
and benchmarked against.
"""

"""Build script: the Python packages, plus fastcnn._C when nvcc is found.

triton_kernels/ sits at the top of the repository (DESIGN.md) and installs as the
subpackage fastcnn.triton_kernels.
"""
from setuptools import setup

PACKAGES = ["fastcnn", "fastcnn.ops", "fastcnn.nn", "fastcnn.bench", "fastcnn.triton_kernels"]

setup(
    packages=PACKAGES,
    package_dir={"fastcnn.triton_kernels": "triton_kernels"},
)

"""The engine: Numba kernels (kernels.py is the file to read), the flat-vector MLP and its optimizers."""

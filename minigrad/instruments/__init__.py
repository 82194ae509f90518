"""Research instruments: the gradient noise scale (noise.py) and Hessian measurements (hessian.py)."""

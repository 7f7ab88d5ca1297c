"""The mount: daemon lifecycle, control socket, the pyfuse3 adapter (ops.py) and the FUSE-free tree model."""

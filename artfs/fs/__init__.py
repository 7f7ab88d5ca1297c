"""The FUSE side of artfs: tree model (nodes, inodes, files, staged), control actions, pyfuse3 adapter."""

"""CLI commands of the mount: mount, unmount, commit, status, reset (filled in with the daemon)."""


def register(sub) -> None:
    pass

"""The `hutch` command line."""


def main() -> None:
    print("hi")

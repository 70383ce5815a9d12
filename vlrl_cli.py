"""The ``vlrl`` console script (placeholder until the CLI lands)."""


def main() -> None:
    raise SystemExit("vlrl: CLI not wired yet")

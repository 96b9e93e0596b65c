"""``python -m app`` — run the gateway (what ``make run`` does)."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve"]))

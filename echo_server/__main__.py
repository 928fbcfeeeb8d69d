"""`python -m echo_server …` behaves exactly like the `echo-server` command."""

from echo_server.process.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m streamgenre` (and `torchrun -m streamgenre`) run the command-line interface."""

from streamgenre.cli import app

if __name__ == "__main__":
    app()

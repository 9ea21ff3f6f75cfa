"""`python -m hwnas` runs the command line."""
from hwnas.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()

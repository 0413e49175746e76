"""The bundled ``fedge`` command: the same entry point as the console script."""

from fedge._cli import main

if __name__ == "__main__":
    main()

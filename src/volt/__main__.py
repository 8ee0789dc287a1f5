"""`python -m volt`: the same as the `volt` command."""
from volt.cli import main

if __name__ == "__main__":
    main()

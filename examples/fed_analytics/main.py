"""syft_flwr entry point: runs this Flower app as researcher or data owner.

The role is chosen by exact email match against [tool.syft_flwr] in
pyproject.toml, or explicitly with --role researcher|data-owner.
"""

from pathlib import Path

from syft_flwr.run import main

if __name__ == "__main__":
    main(Path(__file__).resolve().parent)

"""Write one data owner's patient table as ``patients.csv``, for ``DATA_DIR``.

python prepare_data.py --partition-id 0 --out ./data/do1
"""

from __future__ import annotations

import argparse

from fed_analytics.task import SEED, generate_partition, write_csv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partition-id", type=int, required=True)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    path = write_csv(generate_partition(args.partition_id, args.seed), args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

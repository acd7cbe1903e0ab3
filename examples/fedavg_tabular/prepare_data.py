"""Write one data owner's partition as CSV files, for ``DATA_DIR``.

    python prepare_data.py --partition-id 0 --num-partitions 2 --out ./data/do1

The ClientApp reads ``$DATA_DIR/train.csv`` and ``$DATA_DIR/test.csv`` when
``DATA_DIR`` is set, and generates the same partition itself otherwise.
"""

from __future__ import annotations

import argparse

from fedavg_tabular.task import SEED, load_partition, write_partition_csv


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partition-id", type=int, required=True)
    p.add_argument("--num-partitions", type=int, required=True)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    part = load_partition(args.partition_id, args.num_partitions, args.seed)
    write_partition_csv(part, args.out)
    print(
        f"wrote {len(part.y_train)} train and {len(part.y_test)} test rows to {args.out}"
    )


if __name__ == "__main__":
    main()

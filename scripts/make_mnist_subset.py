#!/usr/bin/env python3
"""Write the MNIST subset bundled in ``equican/data/mnist_subset/`` from a full copy of MNIST.

Usage (from the repository root, with the project installed)::

    .venv/bin/python scripts/make_mnist_subset.py [--source ../shared/data/mnist] [--train 500] [--test 200]

It takes the *first* ``--train`` training and ``--test`` test digits with their labels, unchanged, and writes them
as gzip IDX files under the standard MNIST names. The gzip headers carry no timestamp, so re-running it on the same
source gives byte-identical files (the SHA-256 sums are printed; compare them with the subset's README).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from equican.data import BUNDLED_MNIST_DIR, MNIST_FILES, load_mnist, write_idx

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "mnist",
                        help="directory with the full MNIST IDX files (default: ../shared/data/mnist)")
    parser.add_argument("--out", type=Path, default=BUNDLED_MNIST_DIR, help="output directory")
    parser.add_argument("--train", type=int, default=500, help="number of training digits (default 500)")
    parser.add_argument("--test", type=int, default=200, help="number of test digits (default 200)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("test", args.test)):
        images, labels = load_mnist(split, root=args.source, limit=count)
        images_name, labels_name = MNIST_FILES[split]
        for name, tensor in ((images_name, images), (labels_name, labels.to(dtype=images.dtype))):
            path = write_idx(args.out / f"{name}.gz", tensor)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {tuple(tensor.shape)}, "
                  f"{path.stat().st_size} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()

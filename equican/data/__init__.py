"""Data: an IDX reader/writer and MNIST loading (the bundled subset or a user's full copy).

``load_mnist()`` with no ``root`` reads the small subset shipped inside the package, so examples and tests need
no download; pass ``root=`` a directory of MNIST IDX files to use a full copy.
"""

from .idx import IdxHeader, read_idx, read_idx_header, write_idx
from .mnist import BUNDLED_MNIST_DIR, MNIST_FILES, load_mnist, mnist_files

__all__ = ["BUNDLED_MNIST_DIR", "IdxHeader", "MNIST_FILES", "load_mnist", "mnist_files", "read_idx",
           "read_idx_header", "write_idx"]

"""Data: an IDX reader/writer, MNIST loading (the bundled subset or a user's full copy), and datasets built on it.

``load_mnist()`` with no ``root`` reads the small subset shipped inside the package, so examples and tests need
no download; pass ``root=`` a directory of MNIST IDX files to use a full copy. On top of it:

* [`LocalScaleMNIST`][equican.data.local_scale.LocalScaleMNIST] (and
  [`local_scale_mnist`][equican.data.local_scale.local_scale_mnist] for tensors): the paper's Locally Scaled MNIST,
  several digits each rescaled by its own factor, with [`LocalScalePairs`][equican.data.local_scale.LocalScalePairs] for
  the local-scale error.
* [`TransformedMNIST`][equican.data.transformed.TransformedMNIST] (and
  [`transformed_mnist`][equican.data.transformed.transformed_mnist]): digits transformed by random elements of any
  group.
* [`index_generator`][equican.data.seeding.index_generator]: the per-index random generators that make both reproducible
  under random access.
"""

from .idx import IdxHeader, read_idx, read_idx_header, write_idx
from .local_scale import LAYOUTS, LocalScaleConfig, LocalScaleMNIST, LocalScalePairs, local_scale_mnist
from .mnist import BUNDLED_MNIST_DIR, MNIST_FILES, load_mnist, mnist_files
from .seeding import index_generator, keyed_elements
from .transformed import TransformedConfig, TransformedMNIST, transformed_mnist

__all__ = ["BUNDLED_MNIST_DIR", "IdxHeader", "LAYOUTS", "LocalScaleConfig", "LocalScaleMNIST", "LocalScalePairs",
           "MNIST_FILES", "TransformedConfig", "TransformedMNIST", "index_generator", "keyed_elements", "load_mnist",
           "local_scale_mnist", "mnist_files", "read_idx", "read_idx_header", "transformed_mnist", "write_idx"]

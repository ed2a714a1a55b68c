"""``python -m equican``: the ``equican`` command (also what ``torchrun -m equican train ...`` runs)."""

import sys

from .cli import main

sys.exit(main())

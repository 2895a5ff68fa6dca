"""``python -m unforget ...`` (and ``torchrun --nproc_per_node N -m unforget run ...``): the
``unforget`` command line."""
import sys

from unforget.cli import main

sys.exit(main())

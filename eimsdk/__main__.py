"""``python -m eimsdk`` (also what ``accelerate launch -m eimsdk`` runs)."""

import sys

from eimsdk.cli import main

sys.exit(main())

"""`python -m yolojax.cli ...` runs the `yolojax` command."""
import sys

from yolojax.cli import main

sys.exit(main())

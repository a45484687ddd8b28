import sys

from lrsweep.cli import main

sys.exit(main())

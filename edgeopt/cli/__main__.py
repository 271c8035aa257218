import sys

from edgeopt.cli import main

sys.exit(main())

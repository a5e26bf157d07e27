import sys

from vectorgate.cli import main

sys.exit(main())

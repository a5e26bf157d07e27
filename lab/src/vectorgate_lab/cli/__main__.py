import sys

from vectorgate_lab.cli import main

sys.exit(main())

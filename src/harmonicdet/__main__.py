import sys

from harmonicdet.cli import main

sys.exit(main())

import sys

from bertfit.cli.main import main

sys.exit(main())

import sys

from fleetlet.cli.main import main

sys.exit(main())

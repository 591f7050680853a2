import sys

from gateway.runtime.cli import main

sys.exit(main())

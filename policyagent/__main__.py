import sys

from policyagent.cli import main

sys.exit(main())

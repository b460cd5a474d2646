"""``python -m ikeproto respond|initiate``: see ``ikeproto.tool`` (``--help``)."""

import sys

from ikeproto.tool import main

sys.exit(main())

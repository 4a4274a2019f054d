"""Stand-in for ``condor_chirp`` in the job wrapper's unit tests: records its arguments."""

import json
import os
import sys

with open(os.environ["CHIRP_DOUBLE_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")

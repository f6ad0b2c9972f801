"""Stands in for ``appliance-submit`` in the spawner's unit tests.

argv: RECORD ANSWER_JSON EXIT_CODE STDERR USERNAME. Appends what it was given (stdin request,
argv, environment) as one JSON line to RECORD, prints ANSWER_JSON, writes STDERR, exits EXIT_CODE.
"""

import json
import os
import sys

record, answer, code, stderr = sys.argv[1:5]
with open(record, "a") as f:
    f.write(json.dumps({"request": json.loads(sys.stdin.read()), "argv": sys.argv[5:],
                        "environ": dict(os.environ)}) + "\n")
sys.stdout.write(answer)
sys.stderr.write(stderr)
sys.exit(int(code))

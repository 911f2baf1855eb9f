"""The memory harness's subprocess: ``python -m streamgenre.bench.child FUNCTION REQUEST_JSON``.

Runs one of the measurements below in this fresh interpreter, so the peak RSS it reports is
its own, and prints the result as JSON on stdout. The package does not import this module.
"""

from __future__ import annotations

import json
import sys

from streamgenre.bench.memory import paper_tensors_rss, predict_rss, stream_epoch_rss

MEASUREMENTS = {"stream_epoch_rss": stream_epoch_rss, "paper_tensors_rss": paper_tensors_rss, "predict_rss": predict_rss}


def main(argv: list[str]) -> None:
    name, request = argv
    json.dump(MEASUREMENTS[name](json.loads(request)), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])

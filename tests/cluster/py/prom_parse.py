"""Parses a Prometheus text-format scrape from stdin with the official Python client's parser
(prometheus_client.parser, the reference implementation of the format) and prints it as JSON:
{"families": {name: {"type": ..., "help": ...}}, "samples": [[name, {labels}, value], ...]}.
A scrape the parser rejects makes this exit non-zero with the parser's error."""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {"type": family.type, "help": family.documentation}
    for s in family.samples:
        value = s.value
        if math.isinf(value):
            value = "+Inf" if value > 0 else "-Inf"
        samples.append([s.name, s.labels, value])
print(json.dumps({"families": families, "samples": samples}))

"""The suite's identifier conventions, in one place: plugin names, weights names, sha256 and md5 digests."""
from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\+[a-z0-9_]+)?$")  # methods and datasets: netvlad, roxford5k+1m
WEIGHTS_NAME_PATTERN = re.compile(r"^[a-z0-9_]+\.[a-z0-9_\-]+$")  # arch.tag: resnet101.gldv2_official
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
MD5_PATTERN = re.compile(r"^[0-9a-f]{32}$")  # published by Google Landmarks v2 only
# compact signatures: top256, pq32, top512+pq64 (benchmarks.evaluation.compression)
COMPRESSION_PATTERN = re.compile(r"^(?=.)(?:top(?P<top_d>[1-9][0-9]*)(?:\+(?=pq)|\Z))?(?:pq(?P<pq_m>[1-9][0-9]*))?\Z")

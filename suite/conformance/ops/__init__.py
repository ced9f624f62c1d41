"""Op conformance over OpInfo's op_db: check_ops (check.py), judged as compare.py says."""

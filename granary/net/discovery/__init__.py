"""Where a node learns of peers beyond its configuration's addresses: DNS names that
stand for several nodes (`dns.py`)."""

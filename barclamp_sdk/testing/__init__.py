"""Test helpers for barclamp-sdk and for barclamp authors.

Real parts only: a real Chef server (see :mod:`barclamp_sdk.local`), a
loopback fault proxy, and (in later modules) a simulated fleet of machines
that behave like chef-client does.
"""

from barclamp_sdk.testing.faultproxy import FaultProxy
from barclamp_sdk.testing.indexing import wait_indexed, wait_until
from barclamp_sdk.testing.production import ProductionPersonality

__all__ = ["FaultProxy", "ProductionPersonality", "wait_indexed", "wait_until"]

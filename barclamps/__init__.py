"""The barclamps shipped with barclamp-sdk: nova, ceph, eqlx, swift, bios.

Each registers itself through the ``barclamp_sdk.barclamps`` entry points.
"""

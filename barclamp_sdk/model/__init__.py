"""The Crowbar model: machines, proposals, commits, locks, the queue, secrets.

Nothing here knows a particular barclamp (nova, ceph, ...) or the CLI; the
services are built and wired by :class:`barclamp_sdk.api.Crowbar`.
"""

"""Committing a proposal: planning, gating, writing, dry runs and results."""

from barclamp_sdk.model.commit.committer import *  # noqa: F401,F403  (split below)

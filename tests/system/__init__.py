"""Tests of whole deployments under faults, hostile input, soaks, the cluster, the layout."""

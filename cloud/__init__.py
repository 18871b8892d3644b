"""Loopspot cloud: ingest workers, the store, enrolment, and the dashboard's REST API."""

"""Failure detection on the product path: the report (:mod:`vl4pose.failures.report`) and the ``vl4pose failures``
command (:mod:`vl4pose.failures.cli`)."""

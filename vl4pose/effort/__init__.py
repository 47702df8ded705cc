"""Annotation effort: a click-level simulated annotator (:mod:`vl4pose.effort.annotator`, arrays only) and the
``vl4pose effort`` command that runs it on real images through the product's path (:mod:`vl4pose.effort.run`)."""

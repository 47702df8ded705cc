"""Infrastructure both services use, written once: settings from the environment (:mod:`common.settings`) and
Label Studio labelling configs (:mod:`common.labelconfig`).

The layer between the method and the services: ``common`` may import the standard library and :mod:`vl4pose`
(skeletons, errors); it never imports ``backend``, ``ml_backend``, ``stack``, a web framework, a database
library, the queue or Label Studio (``tests/architecture/test_import_rules.py``), and ``vl4pose`` never imports
it. Both services may import it; importing it loads neither torch nor Flask.
"""

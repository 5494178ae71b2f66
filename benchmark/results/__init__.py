"""Results stage: the Parquet result store (``store``), the storage root and its layout (``storage``)
and the preflight checks of disk and memory before a run (``preflight``)."""

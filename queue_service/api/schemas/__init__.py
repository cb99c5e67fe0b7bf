"""Request and response bodies: ``XCreate`` in, ``XPublic`` out."""

"""The technician's and operator's `pendant` command line."""

"""Table schemas, one JSON file per table; shipped inside the package as `divspa._schemas`."""

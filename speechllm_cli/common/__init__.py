"""Building blocks every layer may use: user-facing errors, atomic I/O, typed configs."""

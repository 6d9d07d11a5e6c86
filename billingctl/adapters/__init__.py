"""The console's SQL: operator operations and listings over the daemon's schema."""

"""The console's rules: decisions on data, between a command and its SQL adapter."""

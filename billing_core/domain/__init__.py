"""The domain: money, rating, the authorization policy, the accounting-packet rules, the
dialled-number, credential and NAS rules. Pure and synchronous: nothing here does IO or
imports a database, Redis or network library (import-linter holds this)."""

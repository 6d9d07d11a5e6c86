"""The daemon's use cases: authorize a call, record accounting. They run the domain's rules
against the ports (billing_core.ports) and import no adapter (import-linter holds this)."""

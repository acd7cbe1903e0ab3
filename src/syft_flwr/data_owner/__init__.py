"""The data owner's side: the request loop and its guarantees, the request ledger and kept replies, the audit trail, the ClientApp handler and the data-owner runner.

See ``docs/architecture.md``."""

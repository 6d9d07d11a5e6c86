"""The SQL side (PostgreSQL, SQLite for the embedded default): one module per port it serves.

- ``tables``      the schema's tables as SQLAlchemy Core objects (from ``models``), one home
- ``models``      the SQLAlchemy models: the schema (migrations in ``adapters/migrations``)
- ``db``          engines and migrations
- ``catalog``     ``SqlCatalog``: the CatalogSource (clients, accounts, rate indexes)
- ``live``        ``SqlLiveState``: the LiveState on the database itself (no Redis)
- ``ledger``      ``SqlLedger``: the Ledger, whose transactions are ``accounting``'s
- ``accounting``  ``SqlAccountingTx``: one accounting transaction, read and written in bulk
- ``bulk``        the bulk reads and writes of that transaction: ``bulk_pg`` (PostgreSQL),
                  ``bulk_sqlite`` (SQLite)
- ``live_truth``  ``SqlLiveTruth``: what a live state kept elsewhere (Redis) rebuilds from
- ``store``       ``SqlStore``: all of them on one engine
- ``notify``      the events log, low-balance notifications, the mail queue
- ``disconnect``  the Disconnect-Request queue
"""

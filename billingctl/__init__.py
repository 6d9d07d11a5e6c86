"""billingctl: the operator's console over the database the daemon uses.

The edge for people, as ``radiusd`` is the edge for switches: it may import billing_core,
never radiusd. ``cli`` is the parser root and ``main``; ``commands/`` holds one module per
command group; ``services/`` the console's rules; ``adapters/`` its SQL.
"""

"""One module per command group: its parser and its ``cmd_*`` functions."""

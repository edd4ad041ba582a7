"""The admin command, matrix-synapse-setup: one module per command."""

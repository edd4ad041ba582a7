"""Every text an administrator can read, kept together.

Each error says what is wrong and how to fix it, in one or two lines.
Placeholders are filled with str.format(); never put a password in one.
"""

# --- answers -------------------------------------------------------------
BAD_NAME = (
    "The {kind} name {value!r} is not allowed: use 1 to 63 lower-case letters, digits "
    "and underscores, starting with a letter or underscore (not 'pg_', 'postgres' or 'template*')."
)
BAD_HOST = (
    "The database host {value!r} is not a host name or IP address: give 'localhost' for "
    "a local cluster, or the name or address of the remote PostgreSQL server."
)
BAD_HOST_SOCKET = (
    "The database host {value!r} is a socket directory; Synapse connects over TCP: give "
    "'localhost' for the local cluster, or the remote server's name or address."
)
BAD_PORT = "The database port {value!r} is not a number from 1 to 65535: the default is 5432."
BAD_PASSWORD_LENGTH = "The password is longer than {limit} characters: choose a shorter one."
BAD_PASSWORD_CHARS = (
    "The password contains control characters (such as a newline or tab): use printable "
    "characters only."
)
BAD_SSLMODE = "The TLS mode {value!r} is not one of: {modes}."

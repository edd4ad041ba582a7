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
    "The database host {value!r} is not a usable socket directory: give an absolute path "
    "without spaces, such as /var/run/postgresql, or 'localhost'."
)
BAD_HOST_WITH_PORT = (
    "The database host {value!r} has a port in it: give the host ({host!r}) here and the "
    "port ({port}) as the database port."
)
BAD_PORT = "The database port {value!r} is not a number from 1 to 65535: the default is 5432."
BAD_PASSWORD_LENGTH = "The password is longer than {limit} characters: choose a shorter one."
BAD_PASSWORD_CHARS = (
    "The password contains control characters (such as a newline or tab): use printable "
    "characters only."
)
BAD_PASSWORD_BLANK = "The password is only spaces: choose one with other characters."
BAD_SSLMODE = "The TLS mode {value!r} is not one of: {modes}."
BAD_SSLROOTCERT_PATH = (
    "The root certificate {value!r} is not an absolute file name: give the full path of the "
    "CA certificate file (PEM), or leave it empty for the system's CAs."
)
BAD_SSLROOTCERT_NOT_FILE = (
    "The root certificate {path} is not a regular file: give the CA certificate file (PEM)."
)
BAD_SSLROOTCERT_UNREADABLE = (
    "The root certificate {path} cannot be read ({reason}): copy the server's CA certificate "
    "(PEM) there, or leave the answer empty for the system's CAs (package ca-certificates)."
)
BAD_SSLROOTCERT_PEM = (
    "The root certificate {path} holds no PEM certificate: give the CA certificate that "
    "signed the server's certificate, in PEM form ('-----BEGIN CERTIFICATE-----')."
)
BAD_SSLROOTCERT_PERMISSIONS = (
    "The root certificate {path} is not readable by Synapse's user {user}: make it readable "
    "(chmod 644 {path}); it is not secret."
)

# --- provisioning and verification ---------------------------------------
LIBPQ_MISSING = (
    "The PostgreSQL client library libpq could not be loaded: install the libpq5 package "
    "(apt install libpq5) and run 'dpkg --configure -a'."
)
NEED_ROOT = (
    "Provisioning a local cluster needs root (it acts as the postgres user): run "
    "'matrix-synapse-setup' as root."
)
NO_POSTGRES_USER = (
    "There is no 'postgres' system user, so no local PostgreSQL cluster: install postgresql "
    "(apt install postgresql), or give the host of a remote server."
)
LOCAL_UNREACHABLE = (
    "Cannot connect to the local PostgreSQL cluster on port {port} ({reason}): check that it "
    "runs ('pg_lsclusters', 'systemctl status postgresql') and listens on port {port}."
)
LOCAL_SUPERUSER_REFUSED = (
    "The local cluster on port {port} refused the postgres user over the Unix socket "
    "(SQLSTATE {sqlstate}): pg_hba.conf needs the line 'local all postgres peer'."
)
SERVER_UNREACHABLE = (
    "Cannot connect to PostgreSQL at {host}:{port} ({reason}): check that the server runs "
    "and listens there ('pg_lsclusters', listen_addresses, firewalls)."
)
LOGIN_REFUSED = (
    "PostgreSQL at {host}:{port} refused role '{user}' for database '{dbname}' (SQLSTATE "
    "{sqlstate}: {reason}): check the role's password, and that pg_hba.conf on the server has "
    "the line '{hba}' above any line that rejects it (then reload PostgreSQL)."
)
SERVER_BUSY = (
    "PostgreSQL at {host}:{port} cannot take the connection now (SQLSTATE {sqlstate}: "
    "{reason}): it is starting, stopping or has too many connections; retry in a moment."
)
TLS_FAILED = (
    "The TLS connection to PostgreSQL at {host}:{port} failed with sslmode '{sslmode}' "
    "({reason}): with verify-full the server's certificate must be signed by a CA in "
    "{sslrootcert} and name '{host}'; give its CA file as the root certificate."
)
DATABASE_MISSING = (
    "The database '{dbname}' does not exist on {host}:{port}: create it (UTF8, collation and "
    "ctype C, owner '{user}') or give the name of an existing one."
)
SERVER_TOO_OLD = (
    "PostgreSQL {version} at {where} is too old: Synapse needs PostgreSQL 14 or later; "
    "upgrade the cluster (pg_upgradecluster) and run this again."
)
WRONG_DATABASE = (
    "The existing database '{dbname}' has {found}, but the homeserver needs {needed}; it "
    "was left untouched. Dump it (pg_dump), recreate it with ENCODING 'UTF8' LC_COLLATE 'C' "
    "LC_CTYPE 'C' TEMPLATE template0 OWNER {user}, and restore the dump."
)
WRONG_OWNER = (
    "The existing database '{dbname}' is owned by '{owner}', not by '{user}'; it was left "
    "untouched. Make '{user}' its owner (ALTER DATABASE {dbname} OWNER TO {user}) or choose "
    "another database name."
)
CANNOT_CREATE_TABLE = (
    "Role '{user}' cannot create tables in database '{dbname}' ({reason}): grant it "
    "(GRANT CREATE ON SCHEMA public TO {user}) or make it the owner of the database."
)
EMPTY_PASSWORD = "No password was given for role '{user}': Synapse logs in with a password."
ROLE_IS_SUPERUSER = (
    "The existing role '{user}' is a PostgreSQL superuser; a homeserver must not log in as one: "
    "choose another role name, or run ALTER ROLE {user} NOSUPERUSER."
)
SUPERUSER_FAILED = "Provisioning as the postgres user failed: {reason}"

# --- the admin command ------------------------------------------------------
PASSWORD_FILE_UNREADABLE = "Cannot read the password file {path} ({reason})."
PASSWORD_NEEDED = (
    "No password: {path} has none; give one with --password-file FILE (or '-' for standard "
    "input)."
)
PASSWORDS_DIFFER = "The two passwords differ: run the command again."

# --- debconf, the snippet and the maintainer scripts (conversation, snippet, maint) ---
SNIPPET_UNREADABLE = (
    "{path} is not a database snippet Synapse can use ({reason}): fix it by hand, or move it "
    "away and run 'dpkg-reconfigure matrix-synapse-setup' to write a new one."
)
SNIPPET_ROUND_TRIP = (
    "The rendered snippet does not read back the {field} that was given; nothing was "
    "written. Please report this as a bug."
)
DEBCONF_PASSWORDS_DIFFER = (
    "The password and its confirmation (matrix-synapse-setup/db-password and "
    "db-password-again) differ: preseed both with the same value, or only db-password."
)
REMOTE_PASSWORD_NEEDED = (
    "A remote server needs the password of role '{user}': preseed "
    "matrix-synapse-setup/db-password or run 'dpkg-reconfigure matrix-synapse-setup'."
)
ABORTED = (
    "The database for Synapse is not set up; the package stays unconfigured. Fix the cause, "
    "then run 'dpkg --configure -a' (or 'dpkg-reconfigure matrix-synapse-setup')."
)
IGNORED = (
    "warning: the database for Synapse was not set up and {path} was left as it is; run "
    "'dpkg-reconfigure matrix-synapse-setup' when the server is available."
)
SNIPPET_KEPT = (
    "warning: {path} keeps your edited version, which differs from the answers in {fields}; "
    "Synapse uses the file, so the database role is made to match it (the version from the "
    "answers is in {path}.ucf-dist)."
)
SNIPPET_CONFLICT = (
    "{path} was edited by hand and differs from the answers in {fields}; nothing was "
    "changed. Merge by hand, or run 'dpkg-reconfigure matrix-synapse-setup' interactively "
    "(or with UCF_FORCE_CONFFNEW=1 to replace the file)."
)
DEFERRED = (
    "{packages} is not configured yet: the database is set up when dpkg has configured it "
    "(trigger matrix-synapse-setup-provision)."
)
SNIPPET_IGNORED = "warning: {reason} Its values are not used as the current answers."
RESTART_FAILED = (
    "warning: restarting Synapse failed ({reason}): check 'systemctl status "
    "matrix-synapse' and 'journalctl -u matrix-synapse'."
)
NO_SYNAPSE_USER = (
    "note: there is no '{user}' user yet, so {path} is readable by root only; it is fixed "
    "when Synapse's package is installed."
)
WROTE_SNIPPET = "Wrote {path} ({owner})."
SNIPPET_UNCHANGED = "{path} is up to date."
ALL_UNCHANGED = (
    "Nothing to change: the database and {path} are as answered (nothing written,"
    " Synapse not restarted)."
)

# --- Synapse's configuration and its SQLite database (synapse_config, migration) ---
SYNAPSE_CONFIG_UNREADABLE = (
    "Synapse's configuration file {path} cannot be read ({reason}): fix it, then run "
    "'dpkg --configure -a'."
)
SQLITE_UNREADABLE = (
    "Synapse's SQLite database {path} cannot be read ({reason}): check the file, then run "
    "'dpkg --configure -a'."
)
SQLITE_FACTS = "{path} ({size}) holds {users} user(s), {rooms} room(s) and {events} event(s)."
PORT_TOOL_MISSING = (
    "Synapse's port tool synapse_port_db is missing ({paths}): install or repair Synapse's "
    "package, then retry; Synapse stays on SQLite."
)
NO_SYNAPSE_USER_TO_PORT = (
    "There is no '{user}' user to run the port tool as: install Synapse's package, then "
    "retry; Synapse stays on SQLite."
)
TARGET_NOT_EMPTY = (
    "The database '{dbname}' already holds {tables} table(s) that are not an unfinished port "
    "of Synapse's SQLite data; nothing was changed. Give another database name, or empty it."
)
SNAPSHOT_FAILED = (
    "Copying the SQLite database {path} failed ({reason}): check free disk space "
    "(df -h /var/lib /var/backups); Synapse stays on SQLite."
)
PORT_FAILED = (
    "Porting Synapse's SQLite data to PostgreSQL failed: {reason}. Synapse stays on SQLite "
    "with all its data; full log: {log}; retry with: {retry}."
)
PORT_PENDING_UPDATES = (
    "the SQLite database has pending background updates (start Synapse on SQLite and let "
    "it finish them)"
)
PORT_PHASE = "Porting Synapse's data to PostgreSQL ({phase}); log: {log}"
CANNOT_STOP_SYNAPSE = (
    "Synapse could not be stopped (policy-rc.d or the service manager refused), so it was not "
    "switched: it stays on SQLite. Allow the stop, then retry."
)
SYNAPSE_STARTED_AGAIN = "Synapse was started again, on SQLite."
COUNTS_DIFFER = (
    "After the port, row counts differ ({tables}); Synapse stays on SQLite. Retry with: " "{retry}."
)
MIGRATED = (
    "Synapse now uses PostgreSQL. Its old SQLite file {path} is kept, and a copy is in "
    "{backup}; to go back, remove {snippet} and restart Synapse."
)
KEEP_SQLITE = (
    "Synapse stays on SQLite ({path}) as asked; its PostgreSQL database is ready: move it "
    "later with 'matrix-synapse-setup migrate'."
)
START_EMPTY = (
    "Synapse starts on the new, empty PostgreSQL database as asked; its SQLite data stays "
    "in {path}, untouched."
)
SNIPPET_OVERRIDDEN = (
    "{source} sets Synapse's database after {path}, so writing {path} would not switch "
    "Synapse to PostgreSQL; nothing was changed. Remove 'database:' from {source}."
)
SNIPPET_DELETED = (
    "{path} was deleted by hand: it is not created again on upgrade (Synapse uses what its "
    "other files say). Run 'dpkg-reconfigure matrix-synapse-setup' to write it again."
)
RUNTIME_DROPIN_EDITED = (
    "{path} was edited, so it is kept: it is yours now. The package's own drop-in is "
    "/usr/lib/systemd/system/matrix-synapse.service.d/matrix-synapse-setup.conf; "
    "delete {path} if it only repeats it."
)
NOTHING_TO_MIGRATE = "Synapse does not use a SQLite database with data: nothing to migrate."
UPDATES_PENDING_STOPPED = (
    "Synapse's SQLite database has {count} background update(s) pending, which only Synapse "
    "runs: start it (systemctl start matrix-synapse), wait a few minutes, then retry."
)
WAITING_FOR_UPDATES = (
    "Waiting for Synapse to finish {count} pending background update(s) (at most {limit} s)."
)
UPDATES_STILL_PENDING = (
    "Synapse still has {count} background update(s) pending after {limit} s; Synapse stays "
    "on SQLite. Retry later (dpkg-reconfigure matrix-synapse-setup)."
)
OTHER_DATABASE_IN_USE = (
    "Synapse uses the PostgreSQL database '{dbname}' on {host}:{port} ({source}); {path} "
    "would point it at another one, so nothing was changed. Give that database in the "
    "answers, or remove 'database:' from {source} once its data has moved."
)

# --- one run at a time ---------------------------------------------------------
LOCK_WAITING = (
    "another matrix-synapse-setup run holds {path}: waiting for it to finish (at most "
    "{seconds} s)."
)
LOCK_TIMEOUT = (
    "Another matrix-synapse-setup run still holds {path}: let it finish (see 'fuser -v {path}'),"
    " then run this again."
)
PASSFILE_UPDATED = "Wrote the new password to {path}: Synapse's next connections use it."
SNIPPET_INLINE_PASSWORD = (
    "note: your edited {path} has the password in it: ucf would show it when it shows "
    "differences; remove the 'password:' line (the password is in {passfile})."
)

# --- PostgreSQL settings for Synapse (tuning) ------------------------------------
TUNING_NO_INCLUDE_DIR = (
    "note: {conf} does not read conf.d (no \"include_dir = 'conf.d'\" line), so no PostgreSQL "
    "settings for Synapse were written: add that line and run 'dpkg-reconfigure "
    "matrix-synapse-setup', or tune PostgreSQL by hand."
)
TUNING_SHARED_CLUSTER = (
    "note: PostgreSQL {cluster} also serves other databases ({others}), so it was not tuned "
    "for Synapse; to tune it anyway, answer yes to 'tune-postgresql' with 'dpkg-reconfigure "
    "matrix-synapse-setup'."
)
TUNING_PENDING = (
    "note: PostgreSQL {cluster} applied the new settings except {names}, which apply when it "
    "restarts ('systemctl restart {unit}', at a time that suits the other users of it)."
)
TUNING_REFUSED = (
    "PostgreSQL {cluster} refused {names} from {path}: the file was removed again and "
    "PostgreSQL runs as before; please report this as a bug of matrix-synapse-setup."
)
TUNING_FAILED = "note: the PostgreSQL settings for Synapse ({path}) were not applied: {reason}."

# --- the first admin account -------------------------------------------------------
BAD_ADMIN_USER = (
    "The admin account name {value!r} is not allowed: give the local part of its Matrix ID "
    "only (alice for @alice:example.org), with lower-case letters, digits and . _ = - / +."
)
ADMIN_PASSWORD_MISSING = (
    "A password is needed to create the admin account {user!r}: enter one, or leave the "
    "account name empty to create no account."
)
ADMIN_PASSWORD_NEEDED = (
    "{user_id} exists and was not created by matrix-synapse-setup: give its password "
    "(admin-password) or another account name."
)
ADMIN_NO_SYNAPSE = (
    "Synapse is not installed yet: the admin account {user!r} will be created when it is "
    "(through this package's trigger on Synapse's unit); the password waits in debconf's "
    "root-only store until then."
)
ADMIN_NO_ANSWER = (
    "Synapse did not answer at {url} within {seconds} s, so {user_id} was not created yet: "
    "see 'journalctl -u matrix-synapse', then run 'matrix-synapse-setup admin create'."
)
ADMIN_NO_SERVER_NAME = (
    "Synapse's configuration has no server_name, so the admin account's Matrix ID is "
    "unknown: set server_name (upstream's package asks for it), then run this again."
)
ADMIN_NO_LISTENER = (
    "Synapse's configuration has no HTTP listener for the client API on a TCP port: add one "
    "(see 'listeners' in homeserver.yaml), or create the admin account with "
    "register_new_matrix_user."
)
ADMIN_SECRET_UNREADABLE = (
    "The registration secret file {path} (registration_shared_secret_path) cannot be read: "
    "fix the file or that setting, then run this again."
)
ADMIN_SECRET_WRITTEN = (
    "Wrote a registration secret to {path} (root and Synapse only) and {snippet}, which "
    "names it; Synapse restarts to read them."
)
ADMIN_WAITING = "Waiting up to {seconds} s for Synapse to answer at {url} ..."
ADMIN_CREATED = "Created the server admin account {user_id}."
ADMIN_EXISTS = "The admin account {user_id} exists (created by this package): left alone."
ADMIN_PASSWORD_SAME = "The admin account {user_id} exists and has that password: left alone."
ADMIN_PASSWORD_CHANGED = (
    "Changed the password of the admin account {user_id} (its other sessions were signed out)."
)
ADMIN_NOT_OURS = (
    "The account {user_id} exists and was not created by this package: it is left alone and "
    "its password was not changed (change it in a Matrix client, as that account)."
)
ADMIN_TOKEN_GONE = (
    "Cannot change the password of {user_id}: the session this package kept ({record}) was "
    "signed out; change the password in a Matrix client (Element: Settings, Security)."
)
ADMIN_API_FAILED = "Synapse refused to create or update {user_id}: {error}."
ADMIN_NOTHING_PENDING = (
    "No admin account to create: give one with --user, or answer admin-user with "
    "'dpkg-reconfigure matrix-synapse-setup'."
)
DEBCONF_UNAVAILABLE = (
    "Cannot read debconf's answers ({reason}): run this as root, or give --user and "
    "--password-file."
)
# --- doctor ---
# A row's detail says what was found (one line); its fix, shown when the row is not ok,
# says what to do.
DOCTOR_SUMMARY = "overall: {status} ({ok} ok, {warn} warn, {fail} fail, {skipped} skipped)"
DOCTOR_SKIPPED = "not checked: {because}"
DOCTOR_CHECK_BROKE = "this check could not run ({reason})"
DOCTOR_FIX_BUG = (
    "please report this as a bug of matrix-synapse-setup (with DPKG_MAINTSCRIPT_DEBUG=1)"
)
DOCTOR_FIX_RECONFIGURE = "run 'dpkg-reconfigure matrix-synapse-setup' to write it again"
DOCTOR_FIX_RUN_AS_ROOT = "run 'matrix-synapse-setup doctor' as root"
DOCTOR_FIX_OWNERSHIP = "{command} (or 'dpkg-reconfigure matrix-synapse-setup')"
DOCTOR_FIX_INSTALL_SYNAPSE = (
    "install Synapse (matrix-synapse-py3 from packages.matrix.org, or Debian's matrix-synapse)"
)
DOCTOR_SNIPPET_MISSING = "{path} does not exist: Synapse is not told to use PostgreSQL"
DOCTOR_SNIPPET_UNREADABLE = (
    "{path} parses, but Synapse's user {user} cannot read it: {blocked} is {owner}"
)
DOCTOR_SNIPPET_WORLD_READABLE = "{path} is readable by every user ({owner}), and it has {what}"
DOCTOR_SNIPPET_OK = "{path} parses and {user} can read it ({owner})"
DOCTOR_NO_SYNAPSE_USER = "{path} parses, but there is no user {user} (Synapse is not installed)"
DOCTOR_INLINE_PASSWORD = "{path} has the password in it, and no password file"
DOCTOR_NO_PASSWORD = "{path} names neither a password nor a password file (passfile)"
DOCTOR_PASSFILE_MISSING = "{path}, the password file {snippet} names, does not exist"
DOCTOR_PASSFILE_UNREADABLE = "the password file {path} cannot be read ({reason})"
DOCTOR_PASSFILE_MODE = "mode {mode:04o} lets others read it, so libpq ignores it (needs 0600)"
DOCTOR_PASSFILE_OWNER = "it is not owned by {user}, who must read it"
DOCTOR_PASSFILE_NOT_READABLE = "{user} cannot read it"
DOCTOR_PASSFILE_BAD = "the password file {path} is {owner}: {problems}"
DOCTOR_PASSFILE_NO_ENTRY = "the password file {path} has no line for role {user}"
DOCTOR_PASSFILE_OK = "{path} is {owner} and has the role's password"
DOCTOR_FIX_CONFIG = "fix the YAML of that file, then run 'matrix-synapse-setup doctor' again"
DOCTOR_EFFECTIVE_OK = "Synapse uses {engine} from {path} (the last 'database:' it reads)"
DOCTOR_EFFECTIVE_DEFAULT = (
    "no file gives Synapse a 'database:', so it uses SQLite ({path}), not {snippet}"
)
DOCTOR_EFFECTIVE_OTHER = (
    "{source} sets Synapse's database ({engine}) after {snippet}, so Synapse does not use ours"
)
DOCTOR_FIX_EFFECTIVE = (
    "remove 'database:' from {source} (Synapse reads conf.d in name order, the last one "
    "wins), then 'systemctl restart matrix-synapse'"
)
DOCTOR_NO_ANSWER = "PostgreSQL does not answer at {where} ({reason})"
DOCTOR_FIX_START_POSTGRESQL = (
    "systemctl start postgresql (see 'pg_lsclusters' and 'journalctl -u postgresql@*')"
)
DOCTOR_FIX_REMOTE_POSTGRESQL = (
    "check that the server runs and listens there (listen_addresses, firewalls, the network)"
)
DOCTOR_LOGIN_FAILED = "Synapse's role {user} cannot log in at {where} ({reason})"
DOCTOR_LOGIN_REFUSED = "PostgreSQL at {where} refuses Synapse's role {user} ({reason})"
DOCTOR_NO_DATABASE = "the database '{dbname}' does not exist at {where}"
DOCTOR_TLS_FAILED = "the TLS connection to PostgreSQL at {where} fails ({reason})"
DOCTOR_BUSY = "PostgreSQL at {where} cannot take the connection now ({reason})"
DOCTOR_QUERY_FAILED = "logged in at {where}, but reading the database's facts failed ({reason})"
DOCTOR_FIX_QUERY_FAILED = (
    "run doctor again; if it fails again, look at the server's log and load (pg_stat_activity)"
)
DOCTOR_NO_LIBPQ = "libpq cannot be loaded ({reason})"
DOCTOR_SERVER_TOO_OLD = "PostgreSQL {version} at {where}: Synapse needs 14 or later"
DOCTOR_FIX_SERVER_TOO_OLD = "upgrade the cluster (pg_upgradecluster), then restart Synapse"
DOCTOR_SERVER_OK = "PostgreSQL {version} at {where}, logged in as {user}"
DOCTOR_DATABASE_WRONG = "database '{dbname}' has {found}; Synapse needs {needed}"
DOCTOR_FIX_DATABASE = (
    "dump it (pg_dump -Fc), recreate it with ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
    "TEMPLATE template0 OWNER {user}, restore the dump"
)
DOCTOR_DATABASE_OK = "database '{dbname}': UTF8, collation C, ctype C, {size}"
DOCTOR_SUPERUSER = "role {user} is a superuser: more power than Synapse needs"
DOCTOR_FIX_SUPERUSER = "as postgres: ALTER ROLE {user} NOSUPERUSER"
DOCTOR_OWNER_OK = "role {user} owns database '{dbname}', and is not a superuser"
DOCTOR_CREATE_OK = (
    "role {user} may create tables in schema public of '{dbname}' (owner: {owner}), "
    "and is not a superuser"
)
DOCTOR_NO_PRIVILEGE = (
    "role {user} neither owns '{dbname}' (owner: {owner}) nor may create tables in its "
    "schema public"
)
DOCTOR_FIX_PRIVILEGE = "as postgres: ALTER DATABASE {dbname} OWNER TO {user}"
DOCTOR_TLS_OK = "in use: {version}, {cipher}, sslmode {sslmode}"
DOCTOR_TLS_UNCHECKED = "; the server's certificate is not checked"
DOCTOR_TLS_LOCAL = "not in use: a local connection ({where}), nothing crosses the network"
DOCTOR_TLS_MISSING = "not in use to the remote server {where} (sslmode {sslmode})"
DOCTOR_FIX_TLS = (
    "enable ssl on the server and answer sslmode verify-full with 'dpkg-reconfigure "
    "matrix-synapse-setup'"
)
DOCTOR_CONNECTIONS = (
    "{used} other connection(s) ({mine} of them Synapse's role) of max_connections {limit}; "
    "with Synapse's whole pool (cp_max {cp_max}) up to {needed}"
)
DOCTOR_CONNECTIONS_HIGH = "; that with cp_max is over {percent} % of max_connections"
DOCTOR_FIX_CONNECTIONS = (
    "raise max_connections to at least {needed} (then restart PostgreSQL), or lower cp_max"
)
DOCTOR_SYNAPSE_MISSING = "Synapse is not installed ({path} does not exist)"
DOCTOR_NO_LISTENER = "Synapse's configuration has no HTTP listener with the 'client' resource"
DOCTOR_FIX_LISTENER = (
    "add a listener with type http and resources [client] to 'listeners:' in "
    "/etc/matrix-synapse/homeserver.yaml, then restart Synapse"
)
DOCTOR_SYNAPSE_DOWN = "Synapse does not answer at {url} ({reason})"
DOCTOR_FIX_SYNAPSE = (
    "systemctl start matrix-synapse; see why it stopped with 'systemctl status "
    "matrix-synapse' and 'journalctl -u matrix-synapse'"
)
DOCTOR_SYNAPSE_OK = "Synapse answers at {url} (client API up to {versions})"
DOCTOR_DISK = "{free} free at {path}; {what}"
DOCTOR_DISK_DATABASE = "the database takes {size}"
DOCTOR_DISK_DEFAULT = "wanted: {size} (the database's size is not known)"
DOCTOR_FIX_DISK = (
    "free space on the filesystem of {path} (a dump before each Synapse upgrade needs it)"
)
DOCTOR_BACKUPS_UNREADABLE = "{path} cannot be read"
DOCTOR_NO_BACKUP = (
    "none yet in {path}: the first is made before the next Synapse upgrade "
    "(matrix-synapse-setup backup makes one now)"
)
DOCTOR_BACKUP = "newest of {count}: {path}, {days:.1f} day(s) old"
DOCTOR_BACKUP_OLD = "; older than {limit} days"
DOCTOR_FIX_BACKUP = (
    "one is made before each Synapse upgrade; to make one now: matrix-synapse-setup backup"
)
# --- backup and restore ---
BACKUP_HOOK_INPUT = (
    "the apt hook did not get apt's package list (first line {first!r}): check that "
    'DPkg::Tools::Options::/usr/share/matrix-synapse-setup/apt-backup-hook::Version is "3".'
)
BACKUP_BAD_VERSION = (
    "cannot name a dump after Synapse version {version!r}: report this as a bug; "
    "to upgrade without a dump, set MATRIX_SYNAPSE_SETUP_SKIP_BACKUP=1."
)
BACKUP_KEEP_INVALID = (
    "{value!r} is not a number of dumps to keep: give a whole number from 1 to {maximum}."
)
BACKUP_NO_SPACE = (
    "no Synapse upgrade without a dump: {directory} has {free} free, the dump of database "
    "{dbname} needs up to {needed}.\nFree some space there (old dumps can go), or upgrade "
    "without a dump once: {env}=1 apt upgrade"
)
BACKUP_DUMP_FAILED = (
    "no Synapse upgrade without a dump: pg_dump of database {dbname} failed: {reason}.\n"
    "Fix that (is PostgreSQL running?), or upgrade without a dump once: {env}=1 apt upgrade"
)
BACKUP_NO_PG_DUMP = (
    "pg_dump is missing: install postgresql-client, or upgrade without a dump once: "
    "{env}=1 apt upgrade"
)
BACKUP_SKIPPED = "warning: {env} is set, Synapse is upgraded without a dump: {reason}"
BACKUP_WRITTEN = "database dump before {package} {old} -> {new}: {path}"
BACKUP_NOT_OURS = (
    "Synapse's database is not the one {path} names (no such file, SQLite, or another "
    "conf.d file sets it): back it up by hand (pg_dump -Fc)."
)
BACKUP_NO_SYNAPSE = (
    "Synapse is not installed (neither matrix-synapse-py3 nor matrix-synapse): install it " "first."
)
RESTORE_BAD_NAME = (
    "{path} is not named as matrix-synapse-setup names its dumps "
    "(synapse-VERSION-YYYYMMDDTHHMMSSZ.dump): give one of /var/backups/matrix-synapse-setup/."
)
RESTORE_NO_FILE = "{path} does not exist or is not a file: give a dump's full path."
RESTORE_NEWER = (
    "{path} is a dump of Synapse {version}, newer than the installed {package} {installed}: "
    "install Synapse {version} or newer first (its schema would not start on an older one)."
)
RESTORE_REMOTE = (
    "the database is on {host}, not this machine's cluster: restore by hand there, as an "
    "admin: createdb -O {user} -E UTF8 --lc-collate=C --lc-ctype=C -T template0 NEWDB, "
    "pg_restore --no-owner --role={user} -d NEWDB {path}, then dpkg-reconfigure "
    "matrix-synapse-setup with NEWDB."
)
RESTORE_EXISTS = (
    "database {dbname} exists already: nothing was restored; wait a second and run the "
    "restore again (the name has the time in it)."
)
RESTORE_FAILED = (
    "pg_restore of {path} into the new database {dbname} failed: {reason}.\nSynapse still "
    "uses its database; drop the new one with 'runuser -u postgres -- dropdb {dbname}'."
)
RESTORE_SNIPPET_KEPT = (
    "{path} is edited by hand and ucf kept it, so Synapse does not use {dbname}: set "
    "'dbname: {dbname}' there and restart Synapse."
)
RESTORE_DEBCONF = (
    "note: debconf's db-name could not be set (is apt running?): run 'echo "
    '"matrix-synapse-setup matrix-synapse-setup/db-name string {dbname}" | '
    "debconf-set-selections'."
)
RESTORED = (
    "Synapse now uses database {new}; the old database {old} is left as it was: once you no "
    "longer need it, drop it with 'runuser -u postgres -- dropdb {old}'."
)
BACKUP_OVERRIDE = (
    "No Synapse upgrade without a dump: fix that, or upgrade without one once: {env}=1 apt upgrade"
)

# --- matrix-synapse-setup plan -----------------------------------------------------------

PLAN_NOTHING = (
    "nothing would change: the files, the database and the services are as the answers say."
)
PLAN_DATABASE_UNCHANGED = "the database and the snippet are as the answers say; besides:"
PLAN_HEADER = '"dpkg-reconfigure matrix-synapse-setup" would:'
PLAN_NOTE = "note: {note}"
PLAN_STEP = "{number}. {step}"

# --- backups of what a server is, and restores that keep E2EE working ----------------------

ARCHIVE_WRITTEN = "signing key and configuration: {path}"
ARCHIVE_LEFT_OUT = (
    "note: {path} is not in {archive}: it does not exist, or is neither a file nor a "
    "directory; back it up by hand if Synapse needs it."
)
ARCHIVE_UNREADABLE = (
    "{path} cannot be read for the archive of the signing key and configuration: {reason}; "
    "make it readable by root, or move it out of Synapse's configuration."
)
ARCHIVE_BROKEN = (
    "{path} cannot be read as an archive: {reason}. List what is left with 'tar -tvf {path}' "
    "and put the files back by hand."
)
ARCHIVE_NOT_OURS = (
    "{path} holds '{member}', which this package never archives (only files and directories "
    "under absolute paths): it is not an archive of ours; put its files back by hand."
)
ARCHIVE_KEPT_EXISTS = (
    "{path} exists already, and the file it would keep is not to be lost: move it away, "
    "then run the restore again."
)
ARCHIVE_DIRECTORY_IN_THE_WAY = (
    "{path} is a directory where the archive has a file: move it away, then run the "
    "restore again."
)
RESTORE_NO_PG_RESTORE = (
    "pg_restore is not installed: install postgresql-client, then run the restore again."
)
RESTORE_UNREADABLE_DUMP = (
    "{path} is not a dump that pg_restore can read ({reason}): give a dump made by "
    "'matrix-synapse-setup backup' or the upgrade hook."
)
RESTORE_PLAN_ONE_TIME_KEYS = (
    "empty table {table} in it before Synapse uses it: the dump holds one-time keys (made "
    "before they were left out), and a key handed out since the dump must not be handed out "
    "again"
)
RESTORE_ONE_TIME_KEYS = (
    "{table}: emptied ({count} one-time key(s) from the dump, some perhaps handed out since "
    "then; clients upload new ones)"
)
RESTORE_ARCHIVE_NOTE = (
    "note: {archive} holds the signing key and configuration of that time; to put them back "
    "too: matrix-synapse-setup restore --with-config {dump}"
)
RESTORE_NO_ARCHIVE = (
    "--with-config: there is no {archive} beside the dump (made by an earlier version?): "
    "restore without --with-config, and put the signing key and configuration back by hand."
)
RESTORE_PLAN_CONFIG = (
    "after a confirmation, put back the signing key and configuration of {archive} (server "
    "name {server}):"
)
RESTORE_CONFIG_REPLACE = "put back {path}, keeping the current file as {kept}"
RESTORE_CONFIG_CREATE = "put back {path} (missing now)"
RESTORE_CONFIG_MKDIR = "make the directory {path} (missing now)"
RESTORE_CONFIG_SAME = "leave {path}: the same as in the archive"
RESTORE_CONFIG_KEY = " (the signing key: the server's identity to other servers)"
RESTORE_CONFIG_OURS = (
    "leave {snippet} and {passfile} as the restore of the database makes them (not from "
    "the archive)"
)
RESTORE_CONFIG_LEFT = "leave {path} as it is (not in the archive)"
RESTORE_CONFIG_REPLACED = "{path}: put back from the archive; the file before is kept as {kept}"
RESTORE_CONFIG_CREATED = "{path}: put back from the archive (it was missing)"
RESTORE_CONFIG_MADE = "{path}: directory made (it was missing)"
RESTORE_CONFIG_NOTHING = "{archive}: every file is as in the archive already"
RESTORE_CONFIRM_PROMPT = (
    "This replaces the server's signing key, its identity to other servers, and its "
    "configuration with those of {archive}.\nType {expected} to go on: "
)
RESTORE_CONFIRM_NEEDED = (
    "restore --with-config replaces the server's signing key and configuration, so it asks "
    "for a confirmation on a terminal; nothing was changed: run it on a terminal, or add --yes."
)
RESTORE_NOT_CONFIRMED = "The answer was not '{expected}': nothing was changed."
# Why a doctor row that needs another row's result was skipped.
DOCTOR_NO_SETTINGS = "the snippet's values are not usable (see 'snippet')"
DOCTOR_NO_SERVER = "no connection to PostgreSQL (see 'postgresql')"
DOCTOR_BACKUP_ARCHIVE = "; with its signing key and configuration ({name})"
DOCTOR_BACKUP_NO_ARCHIVE = (
    "; no archive of the signing key and configuration beside it (the next backup makes one)"
)

# --- PostgreSQL major upgrades and doctor's versions ---------------------------------------

# The pg_upgradecluster hook (postgres/upgrade_hook.py): one line each, on stderr.
HOOK_CARRIED = "matrix-synapse-setup: PostgreSQL settings for Synapse in {path}: {what}"
HOOK_WARNING = (
    "matrix-synapse-setup: warning: the PostgreSQL settings for Synapse were not carried to "
    "cluster {cluster} ({reason}); once the upgrade is done, run 'dpkg-reconfigure "
    "matrix-synapse-setup'."
)
HOOK_NO_NEW_CLUSTER = "no postgresql.conf in {path}"
HOOK_NO_INCLUDE_DIR = "{conf} does not read conf.d (include_dir = 'conf.d')"
HOOK_REFUSED = "PostgreSQL {version} refuses them: {reason}"
# The postinst: our drop-in in the directory of a cluster that is gone.
ORPHAN_REMOVED = "removed {path} (its PostgreSQL cluster is gone)"

# matrix-synapse-setup upgrade-postgresql
UPGRADE_REMOTE = (
    "Synapse's database is on {host}, not a cluster of this machine: upgrade that server "
    "where it runs; upgrade-postgresql moves local clusters only."
)
UPGRADE_NO_CLUSTER = (
    "no PostgreSQL cluster in {etc} listens on port {port} (for host {host}): "
    "upgrade-postgresql moves only Debian's clusters (pg_lsclusters lists them)."
)
UPGRADE_ALREADY_NEWEST = (
    "Synapse's cluster {cluster} is on the newest PostgreSQL installed ({installed}): "
    "nothing to do. Install a newer postgresql-NN first to move it."
)
UPGRADE_TARGET_EXISTS = (
    "cluster {new} exists already: nothing was changed. If it holds nothing you need, "
    "drop it (pg_dropcluster --stop {version} {name}) and run upgrade-postgresql again."
)
UPGRADE_NOT_RUNNING = (
    "cluster {cluster} is not running, so its size cannot be measured: nothing was changed. "
    "Start it (pg_ctlcluster {version} {name} start) and run upgrade-postgresql again."
)
UPGRADE_NO_SPACE = (
    "not enough free space in {where} for {what}: {need} needed, {free} free; nothing was "
    "changed. Free some space there and run upgrade-postgresql again."
)
UPGRADE_NEED_DATA = "cluster {new}'s data (dump and restore)"
UPGRADE_NEED_BACKUP = "the backup"
UPGRADE_PLAN_HEADER = (
    "Synapse's cluster {old} (PostgreSQL {version}) to PostgreSQL {new}, in this order:"
)
UPGRADE_PLAN_SPACE = "{what}: {need} needed in {where}, {free} free"
UPGRADE_PLAN_CHECK = "check the free space: {space}"
UPGRADE_PLAN_BACKUP = "back up database {dbname} ({size}) into /var/backups/matrix-synapse-setup"
UPGRADE_PLAN_STOP = "stop Synapse (if it runs), count the rows of its key tables"
UPGRADE_PLAN_RUN = (
    "pg_upgradecluster {version} {name}: {old} ({size} of databases) is copied to {new} "
    "in {datadir}, which takes its port"
)
UPGRADE_PLAN_COLLATION = "refresh the collation versions that differ (ALTER DATABASE)"
UPGRADE_PLAN_COUNTS = "compare the row counts of Synapse's key tables with those before"
UPGRADE_PLAN_START = "start Synapse (if it ran) and check that it answers"
UPGRADE_PLAN_KEEP = "keep {old}, stopped, until you drop it ({drop})"
UPGRADE_BACKED_UP = "backup: {path}"
UPGRADE_RUNNING = "pg_upgradecluster {old} to {new}; its output goes to {log}"
UPGRADE_STOP_REFUSED = (
    "Synapse could not be stopped (policy-rc.d?): nothing was changed but the backup, and "
    "Synapse runs on. Allow the stop and run upgrade-postgresql again."
)
UPGRADE_SYNAPSE_STILL_ANSWERS = (
    "Synapse still answers at {url} although its service is stopped (started by hand?): "
    "nothing was changed but the backup. Stop it and run upgrade-postgresql again."
)
UPGRADE_PG_UPGRADECLUSTER_FAILED = "pg_upgradecluster failed (exit {code}): {last}"
UPGRADE_NEW_PORT = "the new cluster does not listen on port {port}, which Synapse uses"
UPGRADE_COUNTS_DIFFER = "row counts differ: {tables}"
UPGRADE_SYNAPSE_SILENT = "Synapse did not answer at {url} on the new cluster"
UPGRADE_TOOL_FAILED = "{what} failed: {reason}"
UPGRADE_SYNAPSE_NOT_STARTED = "Synapse did not start again"
UPGRADE_ROLLED_BACK = (
    "the upgrade failed: {reason}.\nSynapse is on the old cluster {old} again, which runs "
    "with its port and start.conf; {keep} pg_upgradecluster's output: {log}"
)
UPGRADE_NEW_KEPT = "the new cluster {new} is stopped and kept (drop it with '{drop}')."
UPGRADE_NEW_DROPPED = "pg_upgradecluster removed the new cluster itself."
UPGRADE_ROLLBACK_FAILED = (
    "the upgrade failed: {reason}; and going back to {old} failed too: {problems}.\n"
    "Check pg_lsclusters, start {old} (pg_ctlcluster ... start) and Synapse; "
    "pg_upgradecluster's output: {log}"
)
UPGRADE_DONE = (
    "Synapse runs on {new} now: {tables} key tables, {rows} rows, as many as on {old}. "
    "pg_upgradecluster's output: {log}"
)
UPGRADE_REFRESHED = "collation versions refreshed: {names}"
UPGRADE_NOT_TUNED = (
    "note: {new} has no PostgreSQL settings for Synapse (was the pg_upgradecluster hook "
    "removed?): run 'dpkg-reconfigure matrix-synapse-setup'."
)
UPGRADE_SYNAPSE_WAS_STOPPED = "Synapse was not running before: it was not started."
UPGRADE_AFTER_DROP = (
    "then 'dpkg-reconfigure matrix-synapse-setup' removes {path}, which pg_dropcluster "
    "leaves behind, and the directories it kept."
)
UPGRADE_KEEP_OLD = (
    "The old cluster {old} is kept, stopped (start.conf: manual). Once you no longer need "
    "it, drop it with:"
)

# doctor: versions, tuning, collations
DOCTOR_FIX_UPGRADE_POSTGRESQL = "matrix-synapse-setup upgrade-postgresql"
DOCTOR_FIX_REMOTE_UPGRADE = "upgrade the PostgreSQL server that Synapse uses, where it runs"
DOCTOR_VERSION_TOO_OLD_FOR_SYNAPSE = (
    "PostgreSQL {major} ({where}) is older than the installed Synapse supports "
    "({minimum} or newer)"
)
DOCTOR_VERSION_OBSOLETE = (
    "PostgreSQL {major} ({where}) is obsolete on this release, which supports {supported}"
)
DOCTOR_VERSION_OK = "PostgreSQL {major} ({where})"
DOCTOR_FIX_RETUNE = "dpkg-reconfigure matrix-synapse-setup"
DOCTOR_TUNING_OK = "cluster {cluster} holds the PostgreSQL settings for Synapse"
DOCTOR_TUNING_MISSING = (
    "cluster {cluster} lacks the PostgreSQL settings for Synapse, which tune-postgresql asks for"
)
DOCTOR_TUNING_STALE = (
    "cluster {cluster} holds PostgreSQL settings for Synapse that are not sized for it"
)
DOCTOR_TUNING_NOT_WANTED = "cluster {cluster}: not tuned (tune-postgresql says no)"
DOCTOR_TUNING_NO_CONF_D = "cluster {cluster} does not read conf.d (include_dir), so it is not tuned"
DOCTOR_TUNING_UNKNOWN = (
    "cluster {cluster} {present} PostgreSQL settings for Synapse (debconf not readable: "
    "run doctor as root, not during apt)"
)
DOCTOR_TUNING_REMOTE = "the server is {host}: its settings are its admin's"
DOCTOR_TUNING_NO_CLUSTER = "no Debian cluster in /etc/postgresql listens on port {port}"
DOCTOR_COLLATION_OK = "every database's collation version matches the library's"
DOCTOR_COLLATION_UNRECORDED = "this PostgreSQL does not record collation versions (before 15)"
DOCTOR_COLLATION_DIFFERS = "collation version changed since the database was made: {found}"
DOCTOR_FIX_COLLATION = (
    "runuser -u postgres -- psql -d {dbname} -c 'REINDEX DATABASE {quoted}' (indexes on "
    "text may sort otherwise now), then: runuser -u postgres -- psql -c '{statement}'"
)

# --- migrations that finish; "running" means "answers" -----------------------------------
UPDATES_RUNNING = (
    "Synapse is stopped and its SQLite database has {count} background update(s) pending: "
    "running them on the copy to be ported, with {tool} (Synapse's own tool; the live file "
    "is not touched); log: {log}"
)
UPDATES_RUN_FAILED = (
    "Running Synapse's pending background updates on the copy of its SQLite database "
    "failed: {reason}. Synapse stays on SQLite with all its data; full log: {log}; start "
    "Synapse (systemctl start matrix-synapse), let it run a few minutes, then retry with: "
    "{retry}."
)
UPDATES_LEFT = (
    "{count} background update(s) are still pending in the copy of Synapse's SQLite "
    "database after {tool} ran, so it cannot be ported; Synapse stays on SQLite with all "
    "its data; full log: {log}; start Synapse (systemctl start matrix-synapse), let it run "
    "a few minutes, then retry with: {retry}."
)
NO_SPACE_TO_PORT = (
    "Not enough free disk space to move Synapse's SQLite database {path} ({size}) to "
    "PostgreSQL: {short}. Nothing was changed and Synapse stays on SQLite: free that much "
    "space (or grow the filesystem), then retry with: {retry}."
)
NO_SPACE_THERE = "{where}: {free} free, {need} needed ({parts})"
PORT_UPDATES_STEP = (
    "run pending background updates on the final snapshot with update_synapse_database "
    "if Synapse is stopped"
)
PORT_SPACE_STEP = (
    "free disk space: enough for PostgreSQL (twice the SQLite file) and the snapshots "
    "(twice again)"
)
RESTART_BY_HAND = (
    "note: no service manager knows Synapse here (no running systemd, no "
    "/etc/init.d/matrix-synapse): if Synapse runs (in a container, under another "
    "supervisor), restart it so that it reads {path}."
)
ADMIN_NOT_ANSWERING = (
    "Synapse does not answer at {url} and its service is not running, so {user_id} was not "
    "created yet: start Synapse, then run 'matrix-synapse-setup admin create' (the password "
    "waits in debconf's root-only store)."
)
ADMIN_RESTART_FOR_SECRET = (
    "Synapse answers at {url} but runs outside the service manager, so it was not restarted "
    "and has not read {snippet}: restart Synapse yourself, then run 'matrix-synapse-setup "
    "admin create' again ({user_id} was not created yet)."
)
DOCTOR_SERVICE_NOT_RUNNING = (
    "; the service manager does not show it running (systemctl is-active matrix-synapse, "
    "or its init script): it runs outside it, so this package cannot restart it"
)
DOCTOR_SERVICE_RUNNING = "; yet the service manager shows it running (starting, or hung?)"

# --- workers: the questions and the postinst ---
WORKERS_INVALID = (
    "'{value}' is not a worker preset. Answer one of {choices} "
    "(dpkg-reconfigure matrix-synapse-setup)."
)
CLIENT_WORKERS_INVALID = (
    "{value!r} is not a number of client workers: use a whole number from 1 to {maximum}, "
    "or leave it empty for {default} (one per core beyond the first; this machine has "
    "{cores})."
)
WORKERS_NEED_REDIS = (
    "Synapse's workers need a Redis server, and none is installed. Install one "
    "(apt install redis-server, or valkey-server), or answer none to the workers question "
    "(dpkg-reconfigure matrix-synapse-setup)."
)
WORKERS_NO_LISTENERS = (
    "Synapse's configuration could not be read for its listeners, which {path} must "
    "repeat. Fix the error Synapse's files give, then run dpkg-reconfigure matrix-synapse-setup."
)
WORKERS_SECRET_MADE = "made {path} ({owner})"
WORKERS_FILE_WRITTEN = "wrote {path}"
WORKERS_FILE_REMOVED = "removed {path}"
WORKERS_LISTENERS_LATER = (
    "{source} sets Synapse's listeners after {path}, so the workers' replication listener "
    "would be lost. Move the listeners to homeserver.yaml, or answer none to the workers "
    "question (dpkg-reconfigure matrix-synapse-setup)."
)
# --- workers: routing ---
ROUTING_NO_PATTERNS = (
    "{path} lists no endpoint pattern: reinstall matrix-synapse-setup to restore it."
)
ROUTING_BAD_PATTERN = (
    "{where}: {pattern!r} is not a path pattern that nginx can take (it must start with "
    '"^/" and hold no double quote, no space and no backslash escape that nginx rewrites): '
    "reinstall matrix-synapse-setup to restore its patterns."
)
ROUTING_BAD_PORTS = (
    "the client workers' ports {ports} are not distinct port numbers from 1 to 65535."
)
# --- workers: the connection budget ---
BUDGET_SAME_POOLS = "{count} {processes} x {size} = {total} of {available}"
BUDGET_MIXED_POOLS = "{count} {processes} ({pools}) = {total} of {available}"
BUDGET_ONE_PROCESS = "process"
BUDGET_PROCESSES = "processes"
BUDGET_LIMITS = (
    "max_connections {max_connections} - {superuser_reserved} superuser_reserved_connections"
)
BUDGET_RESERVED = " - {reserved} reserved_connections"
BUDGET_MARGIN = " - {margin} kept for admins and backups"
BUDGET_REFUSED = (
    "The workers preset '{preset}' needs more connections than PostgreSQL at {host} allows: "
    "{budget}. Raise max_connections there to at least {needed} (then restart PostgreSQL), "
    "or choose fewer client workers or the preset 'none' (dpkg-reconfigure "
    "matrix-synapse-setup)."
)
DOCTOR_BUDGET_FITS = "Synapse's pools fit: {budget}"
DOCTOR_BUDGET_MARGIN = (
    "Synapse's pools leave less than the {margin} connections kept for admins and backups "
    "(pg_dump, psql): {budget}"
)
DOCTOR_BUDGET_OVER = (
    "Synapse's pools need more connections than PostgreSQL allows, so its processes will "
    "be refused under load: {budget}"
)
DOCTOR_FIX_BUDGET = (
    "raise max_connections to at least {needed}, then restart PostgreSQL (it applies only "
    "then), or choose fewer workers or the preset 'none' (dpkg-reconfigure "
    "matrix-synapse-setup)"
)
# --- workers: the model, Redis, units ---
WORKERS_PORT_TAKEN = (
    "Port {port} on 127.0.0.1 is needed by {user}, but a listener in Synapse's configuration "
    "already uses it: move that listener to another port in homeserver.yaml, or choose "
    "the workers preset 'none'."
)
WORKERS_RENDER_MISMATCH = (
    "{path} as rendered does not read back as the settings it was rendered from: this is a "
    "bug in matrix-synapse-setup; nothing was written."
)
# The shared snippet's header.  The last line is what debian/config reads back.
WORKERS_SHARED_HEADER = """\
# Managed by matrix-synapse-setup: Synapse's workers (preset {preset}).
# To change them, run "dpkg-reconfigure matrix-synapse-setup"; ucf asks before it
# replaces a file you edited.
# "listeners" below is a copy of the listeners of homeserver.yaml and conf.d, plus
# the main process's replication listener: Synapse merges its configuration files
# key by key at the top level, so a "listeners" here replaces homeserver.yaml's
# instead of adding to it.  Change listeners in homeserver.yaml, then reconfigure.
# Workers preset: {preset} {count}
"""
WORKER_FILE_HEADER = """\
# Managed by matrix-synapse-setup: Synapse's worker {name} ({role}),
# run by {unit}.
# To change the workers, run "dpkg-reconfigure matrix-synapse-setup".
# What every process shares is in {shared}.
"""
REDIS_CONF_HEADER = """\
# Managed by matrix-synapse-setup: the Redis instance of Synapse's workers,
# run by {unit}.
# To change the workers, run "dpkg-reconfigure matrix-synapse-setup".
# Only Synapse's processes use it, through the Unix socket below.  The socket is
# open to every user (unixsocketperm 777) because the unit runs with PrivateUsers,
# so no group can be shared with Synapse: the password guards it instead.  Only its
# SHA-256 is here; Synapse reads the password from
# {secret}.
"""
UNITS_NO_SYSTEMD = (
    "systemd does not run here: the workers' units are enabled ({wants}) but not started; "
    "they start with matrix-synapse.target when systemd boots."
)
UNITS_FAILED = "{command} failed (exit {code}): see 'journalctl -u {unit}'."
NGINX_NOT_RELOADED = (
    "nginx -t refuses nginx's configuration, so nginx was not reloaded for the new workers' "
    "routes: fix what nginx -t says, then systemctl reload nginx."
)
WORKERS_REMOVED = (
    "Synapse's workers stop with this package: {path} is removed, so Synapse runs as one "
    "process; the workers' files stay until purge, and a reinstall brings them back."
)
WORKERS_FILE_OWNER = "{path}: now {owner}"
WORKERS_WAIT_FOR_SYNAPSE = (
    "Synapse is not installed yet ({path} is missing): its workers are set up when it is."
)
WORKERS_NEED_UPSTREAM_SYNAPSE = (
    "The workers' unit runs Synapse from upstream's package (matrix-synapse-py3, in "
    "/opt/venvs/matrix-synapse), which is not installed. Install it, or answer none to the "
    "workers question (dpkg-reconfigure matrix-synapse-setup)."
)

# --- Dendrite (matrix-synapse-setup dendrite) --------------------------------------------
DENDRITE_NO_RUAMEL = (
    "Editing Dendrite's configuration needs python3-ruamel.yaml (it keeps the file's "
    "comments): run 'apt install python3-ruamel.yaml', then this command again."
)
DENDRITE_NO_FILE = (
    "{path} does not exist: give Dendrite's configuration file with --config (generate one "
    "with Dendrite's generate-config, or start from its dendrite-sample.yaml)."
)
DENDRITE_NOT_FILE = "{path} is not a file: give Dendrite's configuration file with --config."
DENDRITE_UNREADABLE = (
    "Cannot read {path} ({reason}): run this command as root, or make the file readable."
)
DENDRITE_NOT_YAML = (
    "{path} is not valid YAML ({where}: {problem}): fix the file (Dendrite could not read "
    "it either), then run this command again; nothing was changed."
)
DENDRITE_NOT_DENDRITE = (
    "{path} has no 'global' section, so it is not Dendrite's configuration: give "
    "dendrite.yaml with --config; nothing was changed."
)
DENDRITE_NOT_POSTGRES = (
    "{path} sets global.database.connection_string to {value!r}, not PostgreSQL: Dendrite's "
    "data is there, so nothing was changed. To start afresh on PostgreSQL (Dendrite has no "
    "tool to move that data), empty the value first."
)
DENDRITE_OTHER_DATABASE = (
    "{path} already points Dendrite at database '{dbname}' on {where}, not at '{ours}': "
    "Dendrite's data may be there, so nothing was changed. Give --dbname/--host for that "
    "database, or empty global.database.connection_string to use '{ours}'."
)
DENDRITE_COMPONENT_OVERRIDE = (
    "{path} sets {key}{more} to another database, which overrides the global one for that "
    "component; nothing was changed. Remove it (or make it the global value) first."
)
DENDRITE_COMPONENT_MORE = " (and {count} more components)"
DENDRITE_PASSWORD_OVER_TCP = (
    "a password: over TCP to {host}, where Debian's pg_hba.conf takes one (the socket "
    "takes peer authentication); --host chooses"
)
DENDRITE_EDIT_FAILED = (
    "{path} could not be changed safely ({key} has no place of its own that keeps every "
    "comment): set {key} by hand; nothing was changed."
)
DENDRITE_NO_SYSTEM_USER = (
    "No system user '{user}' to log in to PostgreSQL as (peer authentication): create it "
    "('adduser --system --group {user}') for Dendrite to run as, or give --password-file."
)
DENDRITE_SSLMODE = (
    "The TLS mode {value!r} is not one that Dendrite's driver (lib/pq) knows: use one of "
    "{modes}."
)
DENDRITE_REMOTE_PASSWORD = (
    "A remote server needs the password of role '{user}': give it with --password-file "
    "FILE (or '-' for standard input)."
)
DENDRITE_PASSWORD_IN_FILE = (
    "{path} now holds the database password ({owner}): keep it readable only by root and "
    "Dendrite's user."
)
DENDRITE_BUDGET = (
    "Dendrite's connections may not fit: {text}. Lower global.database.max_open_conns in "
    "{path}, or raise max_connections."
)
DENDRITE_UNLIMITED = (
    "Dendrite's pool {pool} has no limit (max_open_conns 0 or less): set "
    "global.database.max_open_conns in {path} to at most {available}."
)
DOCTOR_DENDRITE_NOT_POSTGRES = (
    "{path} sets global.database.connection_string to {value}, which is no PostgreSQL URI"
)
DOCTOR_DENDRITE_FILE = "{path}: {owner}, Dendrite logs in with {how}"
DOCTOR_DENDRITE_READABLE = "{path} holds the database password and others may read it ({owner})"
DOCTOR_FIX_DENDRITE_MODE = "chmod o-rwx {path}"
DOCTOR_DENDRITE_UNREADABLE = (
    "{path} cannot be read by {user}, the user Dendrite logs in as ({owner})"
)
DOCTOR_FIX_DENDRITE_READ = "chgrp {user} {path}; chmod g+r {path}"
DOCTOR_FIX_DENDRITE = "matrix-synapse-setup dendrite --config {path} (add your usual options)"
DOCTOR_DENDRITE_BUDGET_FITS = "Dendrite's pools (and Synapse's on this cluster) fit: {budget}"
DOCTOR_BUDGET_MARGIN_ALL = (
    "the pools leave less than the {margin} connections kept for admins and backups: {budget}"
)
DOCTOR_BUDGET_OVER_ALL = (
    "the pools need more connections than PostgreSQL allows, so some will be refused under "
    "load: {budget}"
)
DOCTOR_FIX_DENDRITE_BUDGET = (
    "lower global.database.max_open_conns in {path}, or raise max_connections to at least "
    "{needed} and restart PostgreSQL"
)
DENDRITE_NEED_ROOT = (
    "Setting up Dendrite's database needs root (it acts as the postgres user and as "
    "Dendrite's user, and rewrites its file): run it as root, or add --dry-run."
)

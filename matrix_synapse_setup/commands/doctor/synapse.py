"""doctor's check that Synapse answers: a GET of /_matrix/client/versions on its client
listener, as found in its effective configuration."""

from __future__ import annotations

from typing import Any

from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.commands.doctor.report import FAIL, OK, WARN, Check, skipped
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse.client import Client, HttpError

CLIENT_PATH = "/_matrix/client/versions"


def check_synapse(facts: Facts) -> Check:
    name = "synapse"
    homeserver = facts.paths.homeserver
    if not homeserver.exists():
        return Check(
            name,
            WARN,
            messages.DOCTOR_SYNAPSE_MISSING.format(path=homeserver),
            messages.DOCTOR_FIX_INSTALL_SYNAPSE,
        )
    config = facts.config()
    if config is None:
        return skipped(name, "Synapse's configuration cannot be read (see 'effective database')")
    url = client_url(config[0])
    if url is None:
        return Check(
            name,
            WARN,
            messages.DOCTOR_NO_LISTENER.format(path=homeserver),
            messages.DOCTOR_FIX_LISTENER,
        )
    # Synapse's answer is the verdict; the service manager's view, when it disagrees, is
    # told beside it (a Synapse in a container or started by hand is unknown to it).
    answer, error = get_versions(url, facts.timeout)
    managed = facts.service_running()
    if error is not None:
        hint = messages.DOCTOR_SERVICE_RUNNING if managed else ""
        return Check(
            name,
            FAIL,
            messages.DOCTOR_SYNAPSE_DOWN.format(url=url, reason=error) + hint,
            messages.DOCTOR_FIX_SYNAPSE,
        )
    hint = "" if managed else messages.DOCTOR_SERVICE_NOT_RUNNING
    return Check(name, OK, messages.DOCTOR_SYNAPSE_OK.format(url=url, versions=answer) + hint)


def client_url(config: dict[str, Any]) -> str | None:
    """The URL of /_matrix/client/versions on Synapse's client listener (see
    synapse_config.client_listener)."""
    base = synapse_config.client_listener(config)
    return base + CLIENT_PATH if base else None


def get_versions(url: str, timeout: float) -> tuple[str | None, str | None]:
    """(the newest client API version Synapse announces, None) or (None, why not).
    Through :class:`client.Client`: never a proxy, a certificate unchecked on loopback only."""
    import urllib.error  # the HTTP client's, loaded with it

    try:
        body = Client(url, timeout).call("GET", "")
    except HttpError as err:
        return None, f"HTTP {err.status}"
    except urllib.error.URLError as err:
        return None, str(getattr(err.reason, "strerror", None) or err.reason)
    except (OSError, ValueError) as err:
        return None, getattr(err, "strerror", None) or str(err) or type(err).__name__
    versions = body.get("versions") if isinstance(body, dict) else None
    if not isinstance(versions, list) or not versions:
        return None, "the answer has no 'versions'"
    return str(versions[-1]), None

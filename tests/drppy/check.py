"""Drives a running herald with drppy-client, RackN's REST client: info, profiles, users,
machines, events and connections, each read through drppy-client's own models.

Usage: check.py ENDPOINT USERNAME PASSWORD [CA_CERT]
ENDPOINT is like https://127.0.0.1:8092. With CA_CERT the server's certificate is verified
against it; without, verification is off (herald's certificate is self-signed).
"""

import datetime
import json
import sys
import uuid

import drppy_client
from drppy_client.api.connections_api import ConnectionsApi
from drppy_client.api.events_api import EventsApi
from drppy_client.api.info_api import InfoApi
from drppy_client.api.machines_api import MachinesApi
from drppy_client.api.profiles_api import ProfilesApi
from drppy_client.api.users_api import UsersApi
from drppy_client.models.event import Event
from drppy_client.models.machine import Machine
from drppy_client.models.profile import Profile

# DRP's Connection model, every field of which drppy-client reads.
CONNECTION_FIELDS = {"CreateTime", "ExpiresAt", "Principal", "RemoteAddr", "Type"}


def main():
    endpoint, username, password = sys.argv[1:4]
    ca_cert = sys.argv[4] if len(sys.argv) > 4 else None

    config = drppy_client.Configuration()
    config.host = endpoint.rstrip("/") + "/api/v3"
    config.username = username
    config.password = password
    if ca_cert:
        config.ssl_ca_cert = ca_cert
        # herald's certificate names 127.0.0.1 and localhost, so hostname checks can stay on.
    else:
        config.verify_ssl = False
    client = drppy_client.ApiClient(config)
    profiles = ProfilesApi(client)

    names = [p.name for p in profiles.list_profiles()]
    assert "global" in names, f"the global profile is missing from {names}"

    name = f"drppy-{uuid.uuid4().hex[:8]}"
    created = profiles.create_profile(
        Profile(name=name, description="made by drppy-client", params={"drppy/answer": 42})
    )
    assert created.name == name, created
    assert created.params == {"drppy/answer": 42}, created.params

    shown = profiles.get_profile(name)
    assert shown.description == "made by drppy-client", shown

    filtered = profiles.list_profiles(name=name)
    assert [p.name for p in filtered] == [name], filtered

    try:
        profiles.create_profile(Profile(name=name))
    except drppy_client.rest.ApiException as error:
        assert error.status == 409, error
    else:
        raise AssertionError("a duplicate create was accepted")

    check_info(client, endpoint, username)
    check_user_with_null_roles(client)
    check_machine_without_uuid(client)
    check_events_without_and_with_an_offset_time(client)
    check_connections(client)
    print(f"drppy-client listed {len(names)} profile(s) and created {name}; info, users, "
          "machines, events and connections passed")


def check_info(client, endpoint, username):
    """InfoApi.get_info() builds drppy-client's Info model, which refuses a missing field."""
    info = InfoApi(client).get_info()
    port = int(endpoint.rsplit(":", 1)[1])
    assert info.address == "127.0.0.1", info.address
    assert info.api_port == port, (info.api_port, port)
    assert info.os == "linux", info.os
    assert "api-v3" in info.features, info.features
    assert info.id and info.version, info
    # UsersApi.get_user_token sends the name as a query parameter (a drppy-client bug), so the
    # token is fetched with the same machinery and read through drppy-client's UserToken model.
    token = client.call_api(
        "/users/{name}/token", "GET", path_params={"name": username},
        query_params=[("ttl", 600)], response_type="UserToken",
        auth_settings=["basicAuth"], _return_http_data_only=True)
    assert token.token, token
    assert token.info.api_port == port and token.info.id == info.id, token.info


def check_user_with_null_roles(client):
    """A user body with "Roles": null, as Go clients send it, is a user without roles."""
    name = f"drppy-{uuid.uuid4().hex[:8]}"
    user = UsersApi(client).create_user({"Name": name, "Roles": None})
    assert user.name == name, user
    assert user.roles == [], user.roles


def check_machine_without_uuid(client):
    """A machine created without a Uuid gets a random one and starts runnable."""
    machines = MachinesApi(client)
    created = machines.create_machine(Machine(name=f"drppy-{uuid.uuid4().hex[:8]}"))
    assert uuid.UUID(created.uuid).version == 4, created.uuid
    assert created.runnable is True, created.runnable
    assert machines.get_machine(created.uuid).name == created.name


def check_events_without_and_with_an_offset_time(client):
    """post_event without Time stores the receive time; with an offset, the time in UTC."""
    events = EventsApi(client)
    key = uuid.uuid4().hex
    events.post_event(body=Event(type="drppy", action="post", key=key, object={"n": 1}))
    local = datetime.timezone(datetime.timedelta(hours=-5))
    sent = datetime.datetime(2026, 12, 5, 10, 0, 0, tzinfo=local)
    events.post_event(body=Event(type="drppy", action="post", key=key, time=sent))
    response = client.call_api(
        "/events", "GET", query_params=[("filter", f"drppy.post.{key}")],
        auth_settings=["basicAuth"], _preload_content=False, _return_http_data_only=True)
    stored = json.loads(response.data)
    assert len(stored) == 2, stored
    received = datetime.datetime.fromisoformat(stored[0]["Time"].replace("Z", "+00:00"))
    age = datetime.datetime.now(datetime.timezone.utc) - received
    assert abs(age.total_seconds()) < 60, stored[0]["Time"]
    assert stored[1]["Time"] == "2026-12-05T15:00:00Z", stored[1]["Time"]


def check_connections(client):
    """list_connections answers DRP's Connection fields; the raw JSON has every one."""
    response = ConnectionsApi(client).list_connections(_preload_content=False)
    connections = json.loads(response.data)
    assert connections, "no connections listed"
    for connection in connections:
        missing = CONNECTION_FIELDS - connection.keys()
        assert not missing, (missing, connection)
        assert isinstance(connection["ExpiresAt"], str) and connection["ExpiresAt"], connection
    # The models parse too (CreateTime and ExpiresAt as datetimes).
    parsed = client.deserialize(FakeResponse(json.dumps(connections)), "list[Connection]")
    assert all(c.expires_at is not None for c in parsed), parsed


class FakeResponse:
    """The one attribute ApiClient.deserialize reads of a response."""

    def __init__(self, data):
        self.data = data


if __name__ == "__main__":
    main()

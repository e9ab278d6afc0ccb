"""Lists and creates profiles on a running herald with drppy-client, RackN's REST client.

Usage: check.py ENDPOINT USERNAME PASSWORD [CA_CERT]
ENDPOINT is like https://127.0.0.1:8092. With CA_CERT the server's certificate is verified
against it; without, verification is off (herald's certificate is self-signed).
"""

import sys
import uuid

import drppy_client
from drppy_client.api.profiles_api import ProfilesApi
from drppy_client.models.profile import Profile


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

    print(f"drppy-client listed {len(names)} profile(s) and created {name}")


if __name__ == "__main__":
    main()

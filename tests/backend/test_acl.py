"""A pendant reaches only its own topics: it cannot speak for another pendant nor read another's messages.

The pendants connect as the firmware does (MQTT 3.1.1, client id = username = device id). A refused
publish is invisible to a 3.1.1 publisher, so each test proves the message never arrived by sending an
allowed marker after it: the broker handles one publisher's messages in order, so once the marker is in,
the refused message would have been delivered before it.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.broker

ALARM = b'{"alarm_id":"1-1","kind":"panic","tst":null,"loc":null,"cell":null,"batt":50,"test":false}'


@pytest.fixture
def two_pendants(provision, mqtt_client):
    a = mqtt_client(provision("pd-000a"))
    b = mqtt_client(provision("pd-000b"))
    return a, b


@pytest.fixture
def backend_account(broker, mqtt_client):
    """A plain client with the backend's account (the backend service itself is not running here)."""
    return mqtt_client(
        username=broker.secrets.backend_username,
        password=broker.secrets.backend_password,
        client_id=broker.secrets.backend_username,
        mqtt5=True,
    )


def test_device_publishes_on_its_own_topics(two_pendants, backend_account) -> None:
    a, _ = two_pendants
    assert not backend_account.subscribe("pendant/v1/+/alarm").is_failure
    a.publish("pendant/v1/pd-000a/alarm", ALARM)
    message = backend_account.expect()
    assert (message.topic, message.payload) == ("pendant/v1/pd-000a/alarm", ALARM)


def test_device_cannot_publish_into_another_devices_data(two_pendants, backend_account) -> None:
    a, b = two_pendants
    for leaf in ("alarm", "status", "tele", "evt", "cmd/res"):
        assert not backend_account.subscribe(f"pendant/v1/+/{leaf}").is_failure
    for leaf in ("alarm", "status", "tele", "evt", "cmd/res"):
        a.publish(f"pendant/v1/pd-000b/{leaf}", b'{"forged":true}')
    a.publish("pendant/v1/pd-000a/alarm", b"marker")
    message = backend_account.expect()
    assert (message.topic, message.payload) == ("pendant/v1/pd-000a/alarm", b"marker")


def test_device_cannot_send_acks_config_or_commands_to_another(two_pendants, backend_account) -> None:
    a, b = two_pendants
    for leaf in ("alarm/ack", "config", "cmd"):
        assert not b.subscribe(f"pendant/v1/pd-000b/{leaf}").is_failure
    # A forged ack would make B drop an alarm that was never stored.
    a.publish("pendant/v1/pd-000b/alarm/ack", b'{"alarm_id":"1-1","state":"received"}')
    a.publish("pendant/v1/pd-000b/config", b'{"rev":99}')
    a.publish("pendant/v1/pd-000b/cmd", b'{"id":"x","cmd":"reboot"}')
    # Once the broker has handled A's publishes (PUBACK above), the backend's marker comes after them.
    backend_account.publish("pendant/v1/pd-000b/alarm/ack", b"marker")
    message = b.expect()
    assert (message.topic, message.payload) == ("pendant/v1/pd-000b/alarm/ack", b"marker")


def test_device_publish_refusal_is_reported_over_mqtt5(provision, mqtt_client) -> None:
    provision("pd-000b")
    a = mqtt_client(provision("pd-000a"), mqtt5=True, clean=True)
    assert a.publish("pendant/v1/pd-000b/alarm", ALARM).value == 135  # not authorised
    assert not a.publish("pendant/v1/pd-000a/alarm", ALARM).is_failure


@pytest.mark.parametrize(
    "topic",
    [
        "pendant/v1/pd-000b/alarm/ack",
        "pendant/v1/pd-000b/config",
        "pendant/v1/pd-000b/cmd",
        "pendant/v1/pd-000b/alarm",
        "pendant/v1/+/alarm/ack",
        "pendant/v1/+/alarm",
        "pendant/v1/pd-000b/#",
        "pendant/#",
        "#",
        "$CONTROL/dynamic-security/v1/response",
    ],
)
def test_device_cannot_subscribe_beyond_its_own_topics(two_pendants, topic: str) -> None:
    a, _ = two_pendants
    assert a.subscribe(topic).is_failure


def test_device_subscribes_to_its_own_commands(two_pendants) -> None:
    a, _ = two_pendants
    for leaf in ("alarm/ack", "config", "cmd"):
        assert not a.subscribe(f"pendant/v1/pd-000a/{leaf}").is_failure
    # Not to its own data topics: only the backend reads those.
    assert a.subscribe("pendant/v1/pd-000a/alarm").is_failure


def test_device_cannot_use_the_dynsec_api(two_pendants, provision) -> None:
    a, b = two_pendants
    command = {"commands": [{"command": "deleteClient", "username": "pd-000b"}]}
    a.publish("$CONTROL/dynamic-security/v1", json.dumps(command).encode())
    # B is still provisioned: provisioning it again is refused as a duplicate.
    with pytest.raises(Exception, match="already provisioned"):
        provision("pd-000b")


def test_backend_account_cannot_forge_device_messages(two_pendants, backend_account) -> None:
    assert backend_account.publish("pendant/v1/pd-000a/alarm", ALARM).value == 135
    assert backend_account.publish("pendant/v1/pd-000a/status", b"{}").value == 135
    assert backend_account.subscribe("#").is_failure
    assert backend_account.subscribe("pendant/v1/+/alarm/ack").is_failure
    assert not backend_account.publish("pendant/v1/pd-000a/alarm/ack", b"{}").is_failure

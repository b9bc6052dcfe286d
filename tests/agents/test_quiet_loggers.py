"""No Kafka client library may write a record's key or value into the worker's log."""

from __future__ import annotations

import logging

from agents.app import quiet_client_libraries


def test_faust_failed_send_warning_with_the_message_repr_is_silenced(caplog):
    for name in ("faust.topics", "aiokafka"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    with caplog.at_level(logging.DEBUG):  # the worker at --loglevel debug
        quiet_client_libraries()
        # what faust.topics.Topic._on_published logs when a send fails: the whole message
        logging.getLogger("faust.topics").warning("_on_published error for message topic t error e message "
                                                  "<FutureMessage: key=b'100.64.0.1' value=b'kund-1@isp'>")
        logging.getLogger("aiokafka").debug("send: k=b'100.64.0.1'")
    assert "100.64.0.1" not in caplog.text and "kund-1" not in caplog.text
    assert logging.getLogger("faust.topics").isEnabledFor(logging.ERROR)  # real errors still show

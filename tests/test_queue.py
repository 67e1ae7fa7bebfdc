"""Handing work to django-q2 after the ledger's commit."""

import pytest
from django.db import connection
from django_q.brokers import get_broker

from auto_renditions import queue


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("count", [3, queue.FAN_OUT_ABOVE + 5])
def test_enqueueing_on_commit_keeps_the_requests_database_connection(count):
    """django-q2's ORM broker calls ``close_old_connections()`` when it runs outside a transaction, which closes
    the connection of a request with ``CONN_MAX_AGE = 0`` halfway through; every enqueue runs in one."""
    broker = get_broker()
    broker.purge_queue()
    connection.ensure_connection()
    before = connection.connection
    queue.enqueue_generation_soon(range(1, count + 1))
    assert connection.connection is before, "the enqueue closed the database connection"
    assert broker.queue_size() == (count if count <= queue.FAN_OUT_ABOVE else 1)
    broker.purge_queue()

"""Concurrent deliveries (Alertmanager retrying after a timeout, HA pairs) never split or duplicate."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from incidents.models import Alert, Incident, TimelineEvent
from tests.incidents.payloads import firing, group, post, post_all_at_once


@pytest.mark.django_db(transaction=True)
def test_simultaneous_deliveries_of_one_new_group_make_one_incident(am_token):
    payloads = [group(*[firing(pod=f"p{i}") for i in range(n, n + 5)]) for n in (0, 3, 0, 3, 6, 0)]
    assert post_all_at_once(payloads, am_token) == [200] * len(payloads)
    incident = Incident.objects.get()
    assert Alert.objects.count() == 11
    assert incident.alert_count == 11 and incident.firing_count == 11
    assert TimelineEvent.objects.filter(kind="alert_firing").count() == 11
    assert TimelineEvent.objects.filter(kind="incident_opened").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "queries"),
    [
        # On PostgreSQL an exact repeat, and a new firing alert of a group with an open
        # incident, take incidents/lane.py: one statement stores the delivery and counts the
        # repeats or inserts the alert; anything else of firing alerts tried it first (one
        # statement that finds nothing on the unique index), then takes the general path, which
        # need not read the known instances when that statement found none of them.
        ("repeat", 1 if connection.vendor == "postgresql" else 5),
        ("new alert in open incident", 1 if connection.vendor == "postgresql" else 6),
        ("new group of 50", 10),
    ],
)
def test_ingest_query_count_does_not_grow_with_the_payload(client, am_token, case, queries):
    post(client, group(firing("A", pod="x")), am_token)
    payload = {
        "repeat": group(firing("A", pod="x")),
        "new alert in open incident": group(firing("A", pod="y")),
        "new group of 50": group(*[firing("C", pod=f"p{i}") for i in range(50)]),
    }[case]
    with CaptureQueriesContext(connection) as ctx:
        assert post(client, payload, am_token).status_code == 200
    # Savepoints differ between databases: pin the statements that do work. On the general
    # path every delivery stores its body, already marked processed, in the ingest's transaction
    # (INSERT), locks its group's open incident before reading (SELECT … FOR UPDATE), reads the
    # known instances (one SELECT, spared on PostgreSQL when the lane found none of them) and
    # updates the incident once (counters and a debounced re-collection request together), then
    # commits once. A repeat there bumps every known instance with one UPDATE; new instances are
    # one INSERT (COPY for many on PostgreSQL, incidents/bulk.py), their timeline lines another,
    # an opened incident's line one more (it is announced, so its id is read back), and the
    # incident's firing alerts are not counted again: the count read under the incident's lock
    # plus the firing ones inserted.
    work = [q for q in ctx.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len(work) == queries, "\n".join(q["sql"][:120] for q in work)

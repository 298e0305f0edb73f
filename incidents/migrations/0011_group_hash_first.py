"""The group's indexes lead with group_hash, so that only they can serve a lookup by group and
only the unique index an alert instance's lookup by cluster.

Led by cluster, each tied with another index leading with cluster when PostgreSQL planned on a
near-empty table, and ingest's statements are prepared: a generic plan made in a new
installation's first minute could read every incident, or every alert, of the cluster on each
webhook for as long as its connection lived (tests/incidents/test_lane_joins.py). Uniqueness does
not depend on the order. One transaction on PostgreSQL: the constraint is never missing.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0010_drop_covered_fk_indexes"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="incident",
            name="one_open_incident_per_group",
        ),
        migrations.RemoveIndex(
            model_name="alert",
            name="alert_group",
        ),
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(fields=["group_hash", "cluster"], name="alert_group"),
        ),
        migrations.AddConstraint(
            model_name="incident",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "resolved"), _negated=True),
                fields=("group_hash", "cluster"),
                name="one_open_incident_per_group",
            ),
        ),
    ]

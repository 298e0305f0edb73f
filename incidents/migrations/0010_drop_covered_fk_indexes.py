"""Drop the single-column indexes of three foreign keys that composite indexes already lead with.

Alert.cluster is covered by `one_row_per_alert_instance` and `alert_group`, Alert.incident by
`alert_incident_status`, TimelineEvent.incident by `timeline_incident_at`. Each index is one more
write for every alert and timeline line ingest inserts. Only the indexes go: Django's AlterField
would also drop and re-create the foreign key constraints, re-checking every row of both tables.
"""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = [
    ("incidents_alert_cluster_id_a3bdd48a", "incidents_alert", "cluster_id"),
    ("incidents_alert_incident_id_de5c827a", "incidents_alert", "incident_id"),
    ("incidents_timelineevent_incident_id_8c8ba3f0", "incidents_timelineevent", "incident_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0009_alert_fillfactor"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=f'DROP INDEX IF EXISTS "{name}"',
                    reverse_sql=f'CREATE INDEX "{name}" ON "{table}" ("{column}")',
                )
                for name, table, column in INDEXES
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="alert",
                    name="cluster",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="incidents.cluster",
                    ),
                ),
                migrations.AlterField(
                    model_name="alert",
                    name="incident",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="alerts",
                        to="incidents.incident",
                    ),
                ),
                migrations.AlterField(
                    model_name="timelineevent",
                    name="incident",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="timeline",
                        to="incidents.incident",
                    ),
                ),
            ],
        ),
    ]

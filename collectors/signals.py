"""Signals other apps listen to, so collectors need not know who comes next."""

from django.dispatch import Signal

# Sent when an incident's evidence collection round has finished (kwargs: incident_id).
# The assistant connects its analysis here.
collection_finished = Signal()

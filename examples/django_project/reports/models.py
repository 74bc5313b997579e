from django.db import models


class Report(models.Model):
    """What a ``build_report`` task leaves behind."""

    task_id = models.CharField(max_length=128, unique=True)
    rows = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"report of task {self.task_id} ({self.rows} rows)"

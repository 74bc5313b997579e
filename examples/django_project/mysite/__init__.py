"""A minimal Django project that runs its slow work with sse_tasks (see README.md)."""

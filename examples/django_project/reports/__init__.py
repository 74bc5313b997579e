"""The example app: reports built by a slow task that uses the ORM."""

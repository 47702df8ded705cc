"""HTTP only: blueprints for the webhook, the JSON API and the dashboard. Logic lives in ``backend.services``."""

"""Webhooks (SPEC 2.7, issue 12): subscriptions, the outbox, delivery, and `egress` (where a
delivery may go)."""
